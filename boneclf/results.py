"""One convention for what library functions return: dataclasses with `to_dict()`.

`to_dict()` gives plain JSON types (dicts, lists, str, numbers, None), so the CLI prints every
result the same way, as a table or with `--json`, and nothing outside a module reads its fields
by string key.
"""

from __future__ import annotations

import json
import math
from dataclasses import Field, fields, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar


class Result:
    """Mixin for result dataclasses. `computed` names properties that belong in `to_dict()` too."""

    computed: ClassVar[tuple[str, ...]] = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # set by @dataclass on every subclass: fields() reads it

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: plain(getattr(self, f.name)) for f in fields(self)}
        for name in self.computed:
            data[name] = plain(getattr(self, name))
        return data


def option_word(value: Any, unset: str = "none") -> str:
    """A stored option for people: yes/no, lists joined by commas, UNSET for None."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return unset
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def plain(value: Any) -> Any:
    """`value` in JSON types: results, dataclasses and NamedTuples become dicts, tuples lists."""
    if callable(getattr(value, "to_dict", None)):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [plain(v) for v in items]
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def finite(value: float | None) -> float | None:
    """None for NaN, so JSON output stays standard (NaN is not JSON)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def without_nan(value: Any) -> Any:
    """`value` with every NaN float replaced by None, recursively (NaN is not JSON: MySQL refuses it)."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    return value


def json_dumps(value: Any) -> str:
    """What bonedb writes into JSON columns: plain types, NaN as null, keys sorted."""
    return json.dumps(without_nan(plain(value)), sort_keys=True, allow_nan=False)


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for people: fixed decimals, "n/a" where it could not be computed."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """"1 view", "2 views": a count with its noun in the right number."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"
