"""The one error type users see: a one-line message naming the input and the problem."""

from __future__ import annotations


class IbisInputError(ValueError):
    """Bad user input (a file, a coordinate, a request). The CLI prints it as one line."""

    def __init__(self, what: object, problem: str):
        self.what = str(what)
        self.problem = problem
        super().__init__(f"{self.what}: {problem}")
