"""A person as the policy: their clicks, typed at the CLI (or sent by another front end), become
assistant turns of the released protocol, so people and models go through the same interface.

A command is one of (coordinates normalised to [0, 1], x = column / W, y = row / H, or pixels when
a value is above 1):
    p X,Y | pos X,Y | + X,Y     positive click
    n X,Y | neg X,Y | - X,Y     negative click
    t | stop | done [ANSWER]    terminate (optional answer text)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import format_response
from ibisagent.errors import IbisInputError
from ibisagent.geometry import pixel_to_norm
from ibisagent.policies.base import Policy

_CLICK = re.compile(r"^(p|pos|positive|\+|n|neg|negative|-)\s*([^,\s]+)\s*,\s*(\S+)$", re.I)
_STOP = re.compile(r"^(t|stop|done|terminate)(\s+.*)?$", re.I)

Ask = Callable[[Observation, Episode], str]


def command_to_turn(command: str, width: int, height: int) -> str:
    """One person's command -> an assistant turn of the protocol. Bad commands raise IbisInputError."""
    text = " ".join(command.strip().split())
    stop = _STOP.match(text)
    if stop:
        answer = (stop.group(2) or "").strip() or "Segmented by a person."
        return format_response("A person ended the session.", "stop", answer=answer)
    m = _CLICK.match(text)
    if not m:
        raise IbisInputError(command, "expected 'p X,Y', 'n X,Y' or 'stop' (X,Y normalised to [0,1] or pixels)")
    try:
        x, y = float(m.group(2)), float(m.group(3))
    except ValueError:
        raise IbisInputError(command, "click coordinates must be numbers") from None
    if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0:
        raise IbisInputError(command, "click coordinates must be finite and not negative")
    if x > 1 or y > 1:  # pixels
        if x >= width or y >= height:
            raise IbisInputError(command, f"pixel click outside the {width} x {height} image")
        x, y = pixel_to_norm(int(x), int(y), width, height)
    kind = "positive" if m.group(1).lower() in ("p", "pos", "positive", "+") else "negative"
    return format_response("A person placed this click.", kind, x, y)


class HumanPolicy(Policy):
    """Turns a person's commands into protocol turns.

    ask(obs, episode) -> command: called once per step (e.g. a prompt at the terminal that
    shows the current overlay). commands: a fixed script instead (used by tests and by
    `segment --clicks`); when it runs out the policy stops. An interactive `ask` is asked again
    after a bad command (up to `max_tries`; `report` shows the problem to the person, None: no
    output, as in the web app where the request's error says it); a bad scripted command is an error.
    """

    name = "human"

    def __init__(
        self,
        ask: Ask | None = None,
        commands: Iterable[str] | None = None,
        max_tries: int = 5,
        report: Callable[[str], None] | None = print,
    ):
        if ask is None and commands is None:
            raise IbisInputError("human", "the human policy needs a prompt (ask=) or a list of commands")
        self.ask = ask
        self.commands = None if commands is None else list(commands)
        self.max_tries = max_tries
        self.report = report

    def act(self, obs: Observation, episode: Episode) -> str:
        H, W = obs.original.shape[:2]
        if self.commands is not None:
            step = len(episode.steps)
            command = self.commands[step] if step < len(self.commands) else "stop"
            return command_to_turn(command, W, H)
        problem = None
        for _ in range(self.max_tries):
            try:
                return command_to_turn(self.ask(obs, episode), W, H)
            except IbisInputError as exc:
                problem = exc
                if self.report is not None:
                    self.report(f"  {exc.problem}")
        raise problem
