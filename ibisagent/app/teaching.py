"""Teaching from the page: the masks a person accepted -> a taught compact policy, in the background.

Off unless the operator names a folder for the taught policies (`serve` / `app --teach-dir DIR`).
POST /v1/annotate/teach takes the export's items; they are written as a pairs dataset in a
temporary folder by the export's own item resolution and checked at once by `teach`'s
`check_pairs` (too few pairs per structure, an empty mask: 400 with its one-line message). A job
then embeds the images with the server's tool (uploaded images are already in its memory cache)
and runs `train.compact.teach.teach` from a compact policy the server runs, within the server's
`TeachConfig` (minutes and steps). One job at a time: a second gets 409. An item whose image
(or volume) the server no longer holds gets one 404 naming every such id, to upload again.

Memory: each taught policy may hold up to `workers` loaded instances (one per concurrent
episode), so taught policies count in the server's memory bound as `max_taught` policies of
`workers` x POLICY_BYTES (config.py). Beyond max_taught a teach request is refused with 507,
before any work (nothing is evicted: a taught policy is a person's work, and its folder the
operator's to clear); a teach folder holding more than max_taught refuses to start the server.

The taught policy is written into DIR/.teach-ID.tmp and renamed to DIR/taught-N only when
complete, then allowed as policy `taught-N` (the taught-N folders in DIR are allowed again when
the server restarts). Cancel takes effect at the job's next checkpoint (each image embedded; the
training's log lines, every 50 steps, and its end) and leaves nothing behind.
"""

from __future__ import annotations

import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from fastapi import FastAPI, Request
from pydantic import Field

from ibisagent.app.annotate import Annotator, ExportItem, ExportRequest
from ibisagent.app.errors import ApiError, bad_request, not_found
from ibisagent.app.requests import body_doc, read_request
from ibisagent.errors import IbisInputError

MAX_TEACH_ITEMS = 200  # accepted masks in one request
KEEP_JOBS = 8  # finished jobs whose state can still be read
TAUGHT = re.compile(r"taught-(\d+)")


class TeachRequest(ExportRequest):
    """The export's items (accepted masks with their structure names) and the policy to start from."""

    items: list[ExportItem] = Field(..., min_length=1, max_length=MAX_TEACH_ITEMS)
    policy: str | None = Field(
        None, max_length=64, description="a compact policy this server runs (default: its first compact policy)"
    )


class _Cancelled(Exception):
    pass


class TeachJob:
    """One teach run's state, as GET /v1/annotate/teach/{job_id} answers it."""

    def __init__(self, base: str, budget_s: float, max_steps: int):
        self.id = secrets.token_hex(8)
        self.base, self.budget_s, self.max_steps = base, budget_s, max_steps
        self.state = "embedding"  # -> training -> done | failed | cancelled
        self.images_done = self.images_total = 0
        self.t0, self.t_train = time.monotonic(), None
        self.steps, self.lines = 0, []
        self.policy = self.error = None
        self.structures: dict[str, int] = {}
        self.result: dict | None = None
        self.cancel = threading.Event()

    def checkpoint(self) -> None:
        if self.cancel.is_set():
            raise _Cancelled

    def embedded(self) -> None:
        self.images_done += 1
        self.checkpoint()

    def stepped(self, step: int) -> None:
        self.steps = step
        self.checkpoint()

    def log(self, line) -> None:
        line = str(line)
        self.lines = [*self.lines[-19:], line]
        self.checkpoint()

    @property
    def running(self) -> bool:
        return self.state in ("embedding", "training")

    def public(self) -> dict:
        now = time.monotonic()
        return {
            "job_id": self.id,
            "state": "cancelling" if self.running and self.cancel.is_set() else self.state,
            "base": self.base,
            "structures": self.structures,
            "images": [self.images_done, self.images_total],
            "steps": self.steps,
            "max_steps": self.max_steps,
            "elapsed_s": round(now - self.t0, 1),
            "training_s": None if self.t_train is None else round(now - self.t_train, 1),
            "budget_s": self.budget_s,
            "log": self.lines,
            "policy": self.policy,
            "error": self.error,
            "result": self.result,
        }


class Teacher:
    """The teach jobs of one service (see the module docstring)."""

    def __init__(self, service, annotator):
        from ibisagent.train.compact.teach import TeachConfig

        self.service, self.annotator = service, annotator
        config = service.config
        self.dir = Path(config.teach_dir).resolve() if config.teach_dir else None
        self.cfg = config.teach or TeachConfig()
        self.jobs: OrderedDict[str, TeachJob] = OrderedDict()
        self.running: TeachJob | None = None
        self._lock = threading.Lock()
        if self.dir is not None:
            from ibisagent.tools.litemedsam_model import LITEMEDSAM_FEATURES

            if service.serial.embedding_kind != LITEMEDSAM_FEATURES:
                raise IbisInputError(
                    "--teach-dir", f"teaching reads LiteMedSAM image embeddings, not {service.tool.name}'s"
                )
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise IbisInputError(self.dir, f"cannot make the teach folder ({exc.strerror or exc})") from None
            for stale in self.dir.glob(".teach-*.tmp"):  # a server stopped while teaching
                shutil.rmtree(stale, ignore_errors=True)
            taught = self._taught()
            if len(taught) > config.max_taught:  # the memory bound counts max_taught of them
                raise IbisInputError(
                    self.dir,
                    f"holds {len(taught)} taught policies, more than the {config.max_taught} the memory bound "
                    "counts (max_taught); move some taught-N folders out",
                )
            for name, folder in taught:
                if name not in service.policies.specs:
                    service.policies.add(f"{name}=compact:{folder / 'compact_policy.pt'}", taught=True)

    def _taught(self) -> list[tuple[str, Path]]:
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := TAUGHT.fullmatch(p.name))]
        return [(p.name, p) for _, p in sorted(found) if (p / "compact_policy.pt").is_file()]

    def check_enabled(self) -> None:
        if self.dir is None:
            raise ApiError(403, "teaching is not enabled on this server (its operator starts it with --teach-dir DIR)")

    def _base(self, name: str | None) -> tuple[str, Path | None]:
        """(policy name, its weights: None for the shipped ones) of the compact policy to start from."""
        policies = self.service.policies
        if name is None:
            name = next((n for n, s in list(policies.specs.items()) if s.partition(":")[0] == "compact"), None)
            if name is None:
                raise bad_request("this server runs no compact policy to teach")
        kind, _, path = policies.specs[policies.resolve(name)].partition(":")
        if kind != "compact":
            raise bad_request(f"policy {name!r} is not a compact policy; only the compact policy learns")
        return name, Path(path) if path else None

    def start(self, req: TeachRequest) -> dict:
        """Check the items and start a job (a worker slot runs this) -> the job's state."""
        from ibisagent.data.pairs import read_pairs_csv
        from ibisagent.train.compact.teach import check_pairs

        self.check_enabled()
        with self._lock:
            if self.running is not None:
                raise ApiError(409, f"a teach job is running ({self.running.id}); wait for it or cancel it")
            kept, most = len(self._taught()), self.service.config.max_taught
            if kept >= most:  # 507: the server has no room for another, whatever the request
                raise ApiError(
                    507,
                    f"this server keeps at most {most} taught policies (its memory bound counts them) and has "
                    f"{kept}; its operator removes some taught-N folders from the teach folder first",
                )
            name, base = self._base(req.policy)
            job = self.running = TeachJob(name, self.cfg.minutes * 60, self.cfg.max_steps)
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(prefix="ibisagent-teach-"))
            origin = self.annotator.write_dataset(req.items, _writer(tmp / "data"))
            samples = read_pairs_csv(tmp / "data" / "pairs.csv")
            try:
                job.structures, _ = check_pairs(samples, self.service.policies.structures(name), self.cfg.min_pairs)
            except IbisInputError as exc:
                raise bad_request(_message(exc, tmp / "data", origin)) from None
            job.images_total = len({s.image for s in samples})
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self.running = None
            raise
        with self._lock:
            self.jobs[job.id] = job
            while len(self.jobs) > KEEP_JOBS:
                self.jobs.popitem(last=False)
        threading.Thread(
            target=self._run, args=(job, samples, base, tmp, origin), name="ibis-teach", daemon=True
        ).start()
        return job.public()

    def _run(self, job: TeachJob, samples, base: Path | None, tmp: Path, origin: dict[str, str]) -> None:
        from ibisagent.train.compact.teach import teach
        from ibisagent.train.embedding_cache import embed_images

        out = self.dir / f".teach-{job.id}.tmp"
        try:
            images = sorted({s.image for s in samples})
            emb = embed_images(self.service.serial, images, tmp / "embeddings", progress=job.embedded)
            job.state, job.t_train = "training", time.monotonic()
            card = teach(samples, emb, out, base, self.cfg, log=job.log, on_step=job.stepped)
            job.checkpoint()
            with self._lock:
                names = [*self.service.policies.specs, *(p.name for p in self.dir.iterdir())]
                taken = [int(m.group(1)) for n in names if (m := TAUGHT.fullmatch(n))]
                name = f"taught-{max(taken, default=0) + 1}"
                final = self.dir / name
                out.rename(final)  # complete, or not there at all
                self.service.policies.add(f"{name}=compact:{final / 'compact_policy.pt'}", taught=True)
            job.policy, job.steps = name, card["steps"]
            job.result = {
                k: card[k] for k in ("structures", "decisions", "steps", "minutes", "taught_pairs_belief_dice")
            }
            job.state = "done"
        except _Cancelled:
            job.state = "cancelled"
        except IbisInputError as exc:
            job.error, job.state = _message(exc, tmp / "data", origin), "failed"
        except ApiError as exc:  # the tool stayed busy
            job.error, job.state = exc.message, "failed"
        except Exception as exc:  # a bug: one line for the client, the traceback for the operator
            import traceback

            traceback.print_exc(file=sys.stderr)
            job.error, job.state = f"internal error ({exc.__class__.__name__})", "failed"
        finally:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self.running = None

    def job(self, job_id: str) -> TeachJob:
        self.check_enabled()
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found(f"unknown teach job {job_id[:64]!r}")
        return job

    def status(self, job_id: str) -> dict:
        return self.job(job_id).public()

    def cancel(self, job_id: str) -> dict:
        job = self.job(job_id)
        job.cancel.set()
        return job.public()


def _writer(root: Path):
    """A `put(path, data)` writing files under `root` (as the export writes zip entries)."""

    def put(rel: str, data: bytes | str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return put


def _message(exc: IbisInputError, root: Path, origin: dict[str, str]) -> str:
    """teach's one-line message about the written dataset, naming the item instead of a server path."""
    where = exc.what
    try:
        rel = Path(where).relative_to(root).as_posix()
        where = origin.get(rel, rel)
    except ValueError:
        where = "items" if where == "DATA" else Path(where).name
    return f"{where}: {exc.problem}"


def mount(app: FastAPI, service, annotator: Annotator) -> Teacher:
    """Add the teach routes to the app."""
    teacher = app.state.teacher = Teacher(service, annotator)

    @app.post("/v1/annotate/teach", status_code=202, openapi_extra=body_doc(TeachRequest, ()))
    async def teach(request: Request) -> dict:
        """Accepted masks (the export's items) -> a background job teaching a compact policy the
        server runs; when done it is a new policy, `taught-N`. 403 unless the operator enabled
        teaching (--teach-dir), 409 while another job runs, 400 for too few pairs or an empty mask,
        404 naming the image/volume ids the server no longer holds (upload them again), 507 when
        it keeps as many taught policies as its memory bound counts."""
        teacher.check_enabled()
        req, _ = await read_request(request, TeachRequest, ())
        return await service.slots.run(teacher.start, req)

    @app.get("/v1/annotate/teach/{job_id}")
    async def teach_status(job_id: str) -> dict:
        """A teach job: state (embedding, training, cancelling, done, failed, cancelled), progress, log, policy."""
        return teacher.status(job_id)

    @app.post("/v1/annotate/teach/{job_id}/cancel")
    async def teach_cancel(job_id: str) -> dict:
        """Stop a teach job at its next checkpoint; nothing it made is kept."""
        return teacher.cancel(job_id)

    return teacher
