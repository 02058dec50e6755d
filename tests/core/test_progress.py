"""The one progress bar: plain lines when stderr is a log file, so a long job never looks dead."""

import io

from rich.console import Console

from ibisagent.progress import LineProgress, progress_bar


def test_a_log_file_gets_plain_progress_lines():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    with progress_bar(console=console, every=0.0) as bar:
        assert isinstance(bar, LineProgress)
        task = bar.add_task("embedding images", total=4)
        for _ in range(4):
            bar.advance(task)
        bar.advance(task, 0)  # a finished task is reported once
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("embedding images: 1/4 (25%)") and lines[-1].startswith("embedding images: 4/4 (100%)")
    assert len(lines) == 4 and "\x1b" not in buf.getvalue()


def test_lines_are_rate_limited_but_completion_always_shows():
    buf = io.StringIO()
    with progress_bar(console=Console(file=buf, force_terminal=False), every=3600) as bar:
        task = bar.add_task("episodes", total=100)
        for _ in range(100):
            bar.update(task, advance=1)
    assert buf.getvalue().splitlines() == [buf.getvalue().splitlines()[-1]]
    assert "100/100" in buf.getvalue()


def test_a_terminal_gets_rich_bar():
    console = Console(file=io.StringIO(), force_terminal=True)
    assert not isinstance(progress_bar(console=console), LineProgress)
