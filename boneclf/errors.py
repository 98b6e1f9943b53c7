"""Errors the CLI turns into one-line messages and a non-zero exit."""

from __future__ import annotations

from dataclasses import dataclass


class BonedbError(Exception):
    """A problem the user can fix; its message says how."""


class SchemaNotAtHead(BonedbError):
    pass


@dataclass(frozen=True)
class Problem:
    """One bad input row: where it is and what is wrong with it."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class InputProblems(BonedbError):
    """Several problems found while reading input; nothing was written."""

    def __init__(self, problems: list[Problem], summary: str):
        self.problems = problems
        super().__init__(summary)
