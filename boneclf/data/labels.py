"""Deciding each study's label from the labeled-studies CSV and the study folder names.

In the official files the two agree. Community relabelings either rename folders (and the CSV)
or ship only a new CSV; a disagreement is refused unless the steward says which source wins.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from boneclf.errors import Problem
from boneclf.vocabulary import label_word

from .mura_reader import ImageRow, Manifest, StudyKey

_SUFFIX = {0: "negative", 1: "positive"}


@dataclass(frozen=True)
class LabelConflict:
    study: StudyKey
    csv_label: int
    folder_label: int
    file: str
    line: int

    def to_dict(self) -> dict:
        return {"study": self.study.describe(), "csv_label": self.csv_label, "folder_label": self.folder_label,
                "file": self.file, "line": self.line}


@dataclass
class StudyLabels:
    labels: dict[StudyKey, int] = field(default_factory=dict)
    conflicts: list[LabelConflict] = field(default_factory=list)  # settled by labels_from
    problems: list[Problem] = field(default_factory=list)
    bad_studies: set[StudyKey] = field(default_factory=set)
    unused_labels: list[StudyKey] = field(default_factory=list)  # labeled, but no image listed


def resolve_labels(manifest: Manifest, labels_from: str | None = None) -> StudyLabels:
    """One label per study that has images; problems for anything that cannot be decided."""
    result = StudyLabels()
    by_study: dict[StudyKey, list[ImageRow]] = defaultdict(list)
    for image in manifest.images:
        by_study[image.study].append(image)

    for key, images in by_study.items():
        folder_labels = {image.folder_label for image in images}
        if len(folder_labels) > 1:
            pos = next(i for i in images if i.folder_label == 1)
            neg = next(i for i in images if i.folder_label == 0)
            result.problems.append(Problem(
                pos.file, pos.line,
                f"{key.describe()} has images in both study{key.number}_positive and "
                f"study{key.number}_negative (see line {neg.line}): keep one folder",
            ))
            result.bad_studies.add(key)
            continue
        folder_label = folder_labels.pop()
        row = manifest.labels.get(key)
        if row is None:
            first = images[0]
            result.problems.append(Problem(
                first.file, first.line,
                f"{key.describe()} has {len(images)} image(s) but no label: add its study folder "
                f"to {key.split}_labeled_studies.csv",
            ))
            result.bad_studies.add(key)
            continue
        if row.label == folder_label == row.folder_label:
            result.labels[key] = row.label
            continue
        conflict = LabelConflict(key, row.label, folder_label, row.file, row.line)
        if labels_from == "csv":
            result.labels[key] = row.label
            result.conflicts.append(conflict)
        elif labels_from == "folder":
            result.labels[key] = folder_label
            result.conflicts.append(conflict)
        else:
            result.problems.append(Problem(row.file, row.line, describe_conflict(conflict, row.folder_label)))
            result.bad_studies.add(key)

    result.unused_labels = sorted(key for key in manifest.labels if key not in by_study)
    return result


def describe_conflict(conflict: LabelConflict, csv_folder_label: int | None = None) -> str:
    text = (
        f"{conflict.study.describe()} is labeled {conflict.csv_label} ({label_word(conflict.csv_label)}) here "
        f"but its images are in study{conflict.study.number}_{_SUFFIX[conflict.folder_label]}"
    )
    if csv_folder_label is not None and csv_folder_label != conflict.folder_label:
        text += f" while this line names study{conflict.study.number}_{_SUFFIX[csv_folder_label]}"
    return text + ": fix one, or choose which wins with --labels-from csv|folder"
