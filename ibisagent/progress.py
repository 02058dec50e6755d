"""One progress bar for every long job: a rich bar on a terminal, plain lines in a log file.

`progress_bar()` returns a `rich.progress.Progress`; use it as rich documents (`with ... as bar`,
`bar.add_task`, `bar.update`, `bar.advance`). On a terminal it draws the bar on stderr. When stderr
is not a terminal (`nohup ... > log`, CI, a job scheduler), rich would draw nothing until the end,
so a long job would look dead; there it writes one line per task instead, at most every
`every` seconds and when a task completes: "embedding images: 120/967 (12%), 1.6 min".
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
    TimeRemainingColumn(),
)


class LineProgress(Progress):
    """A `Progress` that draws nothing and prints plain progress lines (see the module docstring)."""

    def __init__(self, *columns, console: Console, every: float = 30.0, **kwargs):
        kwargs.pop("transient", None)
        super().__init__(*columns, console=console, disable=True, **kwargs)
        self._out, self.every = console, every
        self._last: dict[TaskID, float] = {}
        self._done: set[TaskID] = set()

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def _report(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        if finished and task_id in self._done:
            return
        if not finished and now - self._last.get(task_id, task.start_time or now) < self.every:
            return
        self._last[task_id] = now
        if finished:
            self._done.add(task_id)
        of = f"/{task.total:g} ({task.completed / task.total:.0%})" if task.total else ""
        elapsed = (task.elapsed or 0.0) / 60
        self._out.print(f"{task.description}: {task.completed:g}{of}, {elapsed:.1f} min", highlight=False, markup=False)


def progress_bar(*columns, console: Console | None = None, transient: bool = True, every: float = 30.0) -> Progress:
    """A progress bar on stderr (default columns: description, bar, done/total, elapsed, remaining):
    rich's on a terminal, `LineProgress` otherwise."""
    console = console or Console(stderr=True)
    columns = columns or COLUMNS
    if console.is_terminal:
        return Progress(*columns, console=console, transient=transient)
    return LineProgress(*columns, console=console, every=every)
