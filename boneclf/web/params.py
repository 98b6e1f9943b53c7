"""Request parameters, parsed once: a page and its /api/ twin take the same model, so they cannot
read a parameter differently. An HTML form's empty "any" choice arrives as "" and means None.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from pydantic import BaseModel, BeforeValidator, Field

from boneclf.data.browse import StudyFilter


def _blank_is_none(value: object) -> object:
    return None if value == "" else value


Blank = BeforeValidator(_blank_is_none)


class StudyQuery(BaseModel):
    """The study browser's filters and page."""

    dataset: Annotated[str | None, Blank] = None
    part: Annotated[str | None, Blank] = None
    source_split: Annotated[str | None, Blank] = None
    label: Annotated[int | None, Blank] = None
    split: Annotated[str | None, Blank] = None
    subset: Annotated[str | None, Blank] = None
    page: int = 1
    per_page: int = 48

    def where(self) -> StudyFilter:
        return StudyFilter(self.dataset, self.part, self.source_split, self.label, self.split, self.subset)

    def link(self, page: int) -> str:
        """This query's address on another page, with only the parameters that were given."""
        given = {k: v for k, v in self.model_dump(exclude={"page"}, exclude_defaults=True).items() if v is not None}
        return "/studies?" + urlencode({**given, "page": page})


class SplitQuery(BaseModel):
    """A split's page: whether to hash what was never examined for copies, and which page of the leaks to
    list."""

    hash_missing: bool = Field(False, alias="hash")
    page: int = 1


class AuditFilter(BaseModel):
    """Which of an audit's studies a page shows: the TOP most suspicious of those of PART, labelled LABEL (as
    scored) and scoring at most MAX_SCORE."""

    top: int = Field(50, ge=1, le=100_000)  # the studies a page shows at first
    part: Annotated[str | None, Blank] = None
    label: Annotated[Annotated[int, Field(ge=0, le=1)] | None, Blank] = None
    max_score: Annotated[Annotated[float, Field(ge=0, le=1)] | None, Blank] = None

    def keeps(self, row) -> bool:
        """Whether ROW (a `SuspectRow`) is among the studies chosen."""
        return ((self.part is None or row.part == self.part) and (self.label is None or row.label == self.label)
                and (self.max_score is None or row.score <= self.max_score))
