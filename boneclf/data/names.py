"""What a name the user gives (a dataset, a split) may be, and how long a stored path may be: checked before any
work, so that a name no column can hold is a one-line refusal naming it, not a database error after the work."""

from __future__ import annotations

import os
from typing import Any

from boneclf.errors import BonedbError
from boneclf.store.schema import Dataset, Image, SplitVersion


def _length(column: Any) -> int:
    """The declared length of a String column: what the database keeps at most."""
    return int(column.type.length)


PATH_LENGTH = _length(Image.__table__.c.path)  # an image's path below its dataset's root
_ROOT_LENGTH = _length(Dataset.__table__.c.root)
_LENGTHS = {"dataset": _length(Dataset.__table__.c.name), "split": _length(SplitVersion.__table__.c.name)}


def check_name(kind: str, name: str, option: str) -> str:
    """NAME, or BonedbError saying what is wrong with it: empty, longer than its column, control
    characters, or bytes that are not UTF-8. KIND is dataset or split; OPTION how the user gave it."""
    limit = _LENGTHS[kind]
    if not name or not name.strip():
        raise BonedbError(f"{option}: a {kind} needs a name, e.g. {'mura-v1.1' if kind == 'dataset' else 'hs-v1'}")
    if name != name.strip():
        raise BonedbError(f"{option} {name!r}: leading or trailing spaces; write the name without them")
    if len(name) > limit:
        raise BonedbError(f"{option}: a {kind} name of {len(name)} characters; bonedb keeps at most {limit}: "
                          "choose a shorter name")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BonedbError(f"{option} {name!r}: control characters in a name; choose a plain one")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes from the command line that are not UTF-8
        raise BonedbError(f"{option} {name.encode('utf-8', 'backslashreplace').decode()}: not UTF-8 text; "
                          "choose a name in UTF-8") from None
    return name


def check_root(root) -> str:
    """A dataset's folder as text a row can hold: UTF-8, at most as long as its column."""
    text = str(root)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BonedbError(f"{printable(text)}: the folder's name is not UTF-8; rename it in UTF-8") from None
    if len(text) > _ROOT_LENGTH:
        raise BonedbError(f"{text[:60]}...: a folder path of {len(text)} characters; bonedb keeps at most "
                          f"{_ROOT_LENGTH}: move the dataset to a shorter path")
    return text


def printable(path) -> str:
    """PATH as text any terminal and JSON print: bytes of a file name that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
