"""Worker processes that do not outlive their parent.

A process pool's workers (`eval run --workers N`, `synth --workers N`) each hold a tool and a
policy (hundreds of MB). If the parent is killed (kill -9, OOM killer), nothing tells them: they
would sit on that memory until their current task ends, and then idle. `die_with_parent()`, run in
each worker's initializer, asks Linux to send the worker SIGKILL when its parent dies
(prctl PR_SET_PDEATHSIG) and exits at once if the parent is already gone; elsewhere it starts a
daemon thread that polls the parent's pid once a second.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this process end when `parent_pid` (default: its multiprocessing parent) ends. Call it
    first thing in a pool worker's initializer; in a process that is no multiprocessing child (the
    same initializer run in-process) and without `parent_pid` it does nothing."""
    if parent_pid is None:
        import multiprocessing

        parent = multiprocessing.parent_process()
        if parent is None:
            return
        parent_pid = parent.pid
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch, args=(parent_pid,), name="ibis-parent-watch", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(1.0)
