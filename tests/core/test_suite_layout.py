"""The test suite itself: pytest imports test modules by their file name (the test folders are not
packages), so two test files with one name stop the whole run at collection in a clean clone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def duplicate_test_names(root: Path) -> list[str]:
    """File names used by more than one test_*.py under `root`, sorted."""
    counts = Counter(p.name for p in root.rglob("test_*.py"))
    return sorted(name for name, n in counts.items() if n > 1)


def test_every_test_file_name_is_unique():
    assert duplicate_test_names(TESTS) == []


def test_the_check_sees_a_clash(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "test_same.py").write_text("")
    assert duplicate_test_names(tmp_path) == ["test_same.py"]
