"""Errors the CLI turns into one-line messages and a non-zero exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


NOTHING_WRITTEN = "stopped before its one transaction committed: nothing was written"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying what the interrupted work left behind (the CLI prints it and exits 130).

    A KeyboardInterrupt still, so code that cleans up on Ctrl-C keeps working unchanged.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@contextmanager
def on_interrupt(message: str) -> Iterator[None]:
    """Turn a bare Ctrl-C inside the block into Interrupted(message); a more precise one passes through."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(message) from None


class NotWritten(BonedbError, OSError):
    """The file system refused a write (a full disk, a read-only folder): the message names the target and
    says nothing was left half-written. An OSError still, with the errno of the refusal."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class NotFound(BonedbError):
    """No such thing (study, image, run, group): `bonedb serve` answers 404 with the message."""
