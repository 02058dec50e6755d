"""The policies a server runs: only those its operator allows, chosen by clients by name.

A client never gives a policy spec (a spec may hold a server-side path, `compact:/x.pt`, or a URL
the server would send the image to, `openai:http://HOST/v1`); it names one of the operator's
(`serve --policy NAME=SPEC`). Request `policy_options` are limited to the operator's list of keys
and to plain values, so a client cannot raise a policy's timeouts or retries.

Policies keep per-episode state, so each episode borrows an instance of its own from a small pool
(instances are built on first use and reused; at most one per concurrent episode, so at most
`workers` per policy).
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager

from ibisagent.app.errors import bad_request
from ibisagent.errors import IbisInputError

# make_policy's kinds a server can run ("human" reads a terminal; the web page's person clicks go
# through sessions, not through a policy spec)
SERVABLE = ("compact", "oracle", "centre", "center", "salient", "random", "box", "hf", "openai")


def parse_policy(entry: str) -> tuple[str, str]:
    """(name, spec) of `NAME=SPEC`, or of a bare `SPEC`, which is named by its part before ":"."""
    name, sep, spec = entry.partition("=")
    if not sep:
        spec, name = entry, entry.partition(":")[0]
    name, spec = name.strip(), spec.strip()
    if not name or not spec or not name.replace("-", "").replace("_", "").isalnum():
        raise IbisInputError(entry, "a policy is NAME=SPEC (NAME: letters, digits, - and _) or a SPEC")
    return name, spec


class PolicyRegistry:
    """name -> spec of the allowed policies (first: the default), with a pool of instances each."""

    def __init__(self, entries: tuple[str, ...] | list[str], option_keys: tuple[str, ...] = ()):
        self.specs: dict[str, str] = {}
        self._free: dict[str, list] = {}
        self._structures: dict[str, list[str]] = {}
        self._made: dict[str, int] = {}  # pooled instances built (in the pool or lent out)
        self.taught: set[str] = set()  # policies taught while serving (their memory is counted)
        self._lock = threading.Lock()
        for entry in entries:
            self.add(entry)
        if not self.specs:
            raise IbisInputError("--policy", "allow at least one policy")
        self.option_keys = tuple(option_keys)

    def add(self, entry: str, taught: bool = False) -> str:
        """Allow one more policy, `NAME=SPEC` or a SPEC (at start, or a policy taught while the
        server runs: `taught`) -> its name."""
        name, spec = parse_policy(entry)
        kind = spec.partition(":")[0]
        if kind not in SERVABLE:
            raise IbisInputError(entry, f"not a policy the server can run; kinds: {', '.join(SERVABLE)}")
        with self._lock:
            if name in self.specs:
                raise IbisInputError(entry, f"policy name {name!r} given twice")
            self._free[name] = []
            self._made[name] = 0
            self.specs[name] = spec
            if taught:
                self.taught.add(name)
        return name

    def instances(self, name: str) -> int:
        """How many pooled instances of policy `name` exist (at most one per concurrent episode)."""
        return self._made.get(name, 0)

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    @property
    def default(self) -> str:
        return next(iter(self.specs))

    def check_options(self, name: str, options: dict) -> dict:
        """The request's policy_options if allowed: keys from the operator's list, finite numbers."""
        bad = sorted(k for k in options if k not in self.option_keys)
        if bad:
            allowed = ", ".join(self.option_keys) or "none"
            raise bad_request(f"policy_options {', '.join(map(repr, bad))} not allowed (allowed: {allowed})")
        for k, v in options.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad_request(f"policy_options {k!r} must be a finite number")
        return options

    def _make(self, name: str, options: dict):
        from ibisagent.policies import make_policy

        try:
            return make_policy(self.specs[name], **options)
        except TypeError as exc:
            raise bad_request(f"policy {name!r}: bad policy_options ({exc})") from None
        except IbisInputError as exc:
            raise bad_request(f"policy {name!r}: {exc.problem}") from None

    def resolve(self, name: str | None) -> str:
        """A client's policy name (None: the default) -> an allowed name, or 400."""
        name = self.default if name is None else name
        if name not in self.specs:
            raise bad_request(f"unknown policy {name[:64]!r}; this server runs: {', '.join(self.specs)}")
        return name

    def structures(self, name: str) -> list[str]:
        """The structures allowed policy `name` knows (`policies.known_structures`; read once), or 400."""
        from ibisagent.policies import known_structures

        name = self.resolve(name)
        if name not in self._structures:
            try:
                self._structures[name] = known_structures(self.specs[name])
            except IbisInputError as exc:
                raise bad_request(f"policy {name!r}: {exc.problem}") from None
        return self._structures[name]

    @contextmanager
    def borrow(self, name: str, options: dict | None = None):
        """A `Lease` of an instance of policy `name` for one episode (with options: a fresh
        instance, not pooled). An abandoned lease (an episode past its deadline, still running)
        does not go back to the pool."""
        options = self.check_options(name, options or {})
        if options:
            yield Lease(self._make(name, options))
            return
        with self._lock:
            policy = self._free[name].pop() if self._free[name] else None
        if policy is None:
            policy = self._make(name, {})
            with self._lock:
                self._made[name] += 1
        lease = Lease(policy)
        try:
            yield lease
        finally:
            with self._lock:
                if lease.abandoned:  # freed once its episode's thread ends
                    self._made[name] -= 1
                else:
                    self._free[name].append(lease.policy)


class Lease:
    """A borrowed policy instance; `abandoned` keeps it out of the pool."""

    def __init__(self, policy):
        self.policy = policy
        self.abandoned = False
