"""MURA v1.1's four CSV files, read as they really are, into one uniform list of image rows.

The real files have no header row; the image-path files use CRLF endings, the labeled-studies
files LF. Every problem found is kept with its file and line so that all of them can be shown
at once; nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from boneclf.errors import BonedbError, Problem
from boneclf.vocabulary import BODY_PARTS, SOURCE_SPLITS

from .names import PATH_LENGTH

DEFAULT_DATASET_DIR = "MURA-v1.1"
LABELS_FROM = ("csv", "folder")

# Loose on purpose: each piece is then checked on its own, so a message can say which one is wrong.
_IMAGE_PATH = re.compile(
    r"^(?P<top>[^/]+)/(?P<split>[^/]+)/XR_(?P<part>[^/]+)/patient(?P<patient>[^/]+)/"
    r"study(?P<study>\d+)_(?P<suffix>positive|negative)/image(?P<image>\d+)\.png$"
)
_STUDY_PATH = re.compile(
    r"^(?P<top>[^/]+)/(?P<split>[^/]+)/XR_(?P<part>[^/]+)/patient(?P<patient>[^/]+)/"
    r"study(?P<study>\d+)_(?P<suffix>positive|negative)/?$"
)
_IMAGE_FILE = re.compile(r"image(\d+)\.png")
_EXPECTED_IMAGE = "{top}/<train|valid>/XR_<PART>/patient<5 digits>/study<N>_<positive|negative>/image<N>.png"
_EXPECTED_STUDY = "{top}/<train|valid>/XR_<PART>/patient<5 digits>/study<N>_<positive|negative>/,<0|1>"
_SUFFIX_LABEL = {"positive": 1, "negative": 0}
LARGEST_NUMBER = 2**31 - 1  # study and image numbers are INTEGER columns


# NamedTuples rather than dataclasses: a full MURA makes 40,000 of these, and they are built on the hot path.
class StudyKey(NamedTuple):
    """A study's identity: patient, body part and study number (plus MURA's split it lives in)."""

    patient: str
    part: str
    number: int
    split: str

    def describe(self) -> str:
        return f"patient{self.patient} {self.part} study{self.number} ({self.split})"


class ImageRow(NamedTuple):
    path: str  # relative to the dataset root, exactly as in the CSV
    study: StudyKey
    image_number: int
    folder_label: int  # from the study folder's _positive/_negative suffix
    file: str
    line: int


class LabelRow(NamedTuple):
    study: StudyKey
    label: int
    folder_label: int
    file: str
    line: int


@dataclass
class Manifest:
    """What the CSVs say, before any decision about labels."""

    root: Path  # image paths are relative to this folder
    dataset_dir: Path
    images: list[ImageRow] = field(default_factory=list)
    labels: dict[StudyKey, LabelRow] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    csv_sha256: dict[str, str] = field(default_factory=dict)  # each CSV read, for the ingest log


def locate(root: Path) -> tuple[Path, Path]:
    """(folder the CSV paths are relative to, the MURA-v1.1 folder) for ROOT given either way."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise BonedbError(f"{root}: no such folder: pass the folder that holds {DEFAULT_DATASET_DIR}/")
    if (root / DEFAULT_DATASET_DIR).is_dir():
        return root, root / DEFAULT_DATASET_DIR
    if any((root / f"{split}_image_paths.csv").exists() for split in SOURCE_SPLITS):
        return root.parent, root
    raise BonedbError(
        f"{root}: neither {DEFAULT_DATASET_DIR}/ nor train_image_paths.csv is here: "
        f"pass the folder that holds {DEFAULT_DATASET_DIR}/ or that folder itself"
    )


def read_manifest(root: Path, parts=BODY_PARTS, splits=SOURCE_SPLITS) -> Manifest:
    """Read the CSVs of the chosen splits; keep rows of the chosen parts; collect every problem."""
    base, dataset_dir = locate(root)
    manifest = Manifest(root=base, dataset_dir=dataset_dir)
    reader = _Reader(manifest, dataset_dir.name, set(parts))
    for split in splits:
        reader.read_labels(dataset_dir / f"{split}_labeled_studies.csv", split)
        reader.read_images(dataset_dir / f"{split}_image_paths.csv", split)
    return manifest


class _Reader:
    def __init__(self, manifest: Manifest, top: str, parts: set[str]):
        self.manifest = manifest
        self.top = top
        self.parts = parts
        self.seen_paths: dict[str, tuple[str, int]] = {}
        self.seen_images: dict[tuple[StudyKey, int], tuple[str, int]] = {}
        # Each study folder is parsed once, not once per image: (study, label its name says).
        self.study_folders: dict[str, tuple[StudyKey, int]] = {}

    def problem(self, file: str, line: int | None, message: str) -> None:
        self.manifest.problems.append(Problem(file, line, message))

    def _lines(self, path: Path, split: str):
        name = f"{path.parent.name}/{path.name}"
        if not path.is_file():
            self.problem(
                name, None, f"missing: MURA ships {path.name} beside the others; restore it, "
                f"or leave out this split with --split {'valid' if split == 'train' else 'train'}"
            )
            return name, []
        data = path.read_bytes()
        self.manifest.csv_sha256[name] = hashlib.sha256(data).hexdigest()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.problem(name, None, f"not UTF-8 text ({exc.reason} at byte {exc.start}): is this a CSV file?")
            return name, []
        # CRLF and LF both occur in the real files; blank lines (a trailing newline) carry nothing.
        rows = [(number, raw.rstrip("\r").strip()) for number, raw in enumerate(text.split("\n"), start=1)]
        return name, [(number, row) for number, row in rows if row]

    def _check_parts(self, name, number, match, split, what) -> StudyKey | None:
        """Validate the pieces of a matched path; None (with a problem recorded) when any is wrong."""
        if match["top"] != self.top:
            self.problem(name, number, f"{what} does not start with {self.top}/: paths are relative "
                         f"to the folder that holds {self.top}/")
            return None
        if match["split"] != split:
            self.problem(name, number, f"{what} is in {match['split']!r}, but this file lists the "
                         f"{split} split: move the line to {match['split']}_*.csv")
            return None
        part = match["part"].lower()
        if match["part"] != match["part"].upper() or part not in BODY_PARTS:
            self.problem(name, number, f"unknown body part XR_{match['part']}: MURA has "
                         + ", ".join(f"XR_{p.upper()}" for p in BODY_PARTS))
            return None
        if not (len(match["patient"]) == 5 and match["patient"].isdigit()):
            self.problem(name, number, f"patient id {match['patient']!r} is not 5 digits as in patient00001")
            return None
        if int(match["study"]) > LARGEST_NUMBER:
            self.problem(name, number, f"study number {match['study']} is larger than {LARGEST_NUMBER}: "
                         "number studies 1, 2, 3, ... as MURA does")
            return None
        return StudyKey(match["patient"], part, int(match["study"]), split)

    def _path_problem(self, path: str) -> str | None:
        if not (path[0] in "/\\" or ".." in path or "\\" in path or path[1:2] == ":"):
            return None  # the common case, decided without a regex
        if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
            return f"absolute path {path!r}: paths must be relative to the folder that holds {self.top}/"
        if ".." in re.split(r"[\\/]", path):
            return f"path {path!r} escapes the dataset root with '..': remove the line or fix the path"
        if "\\" in path:
            return f"path {path!r} uses backslashes: MURA paths use / separators"
        return None

    def read_labels(self, path: Path, split: str) -> None:
        name, lines = self._lines(path, split)
        for number, row in lines:
            fields = row.split(",")
            if len(fields) != 2:
                self.problem(name, number, f"expected 2 columns (study folder, 0 or 1), found {len(fields)}: {row!r}")
                continue
            study_path, label_text = fields[0].strip(), fields[1].strip()
            if (problem := self._path_problem(study_path)) is not None:
                self.problem(name, number, problem)
                continue
            match = _STUDY_PATH.match(study_path)
            if match is None:
                if number == 1 and label_text not in ("0", "1"):
                    self.problem(name, number, "looks like a header row; MURA's CSVs have none: delete this line")
                else:
                    self.problem(name, number, f"malformed study path {study_path!r}: expected "
                                 + _EXPECTED_STUDY.format(top=self.top))
                continue
            if label_text not in ("0", "1"):
                self.problem(name, number, f"label {label_text!r} is not 0 (normal) or 1 (abnormal)")
                continue
            key = self._check_parts(name, number, match, split, "study path")
            if key is None or key.part not in self.parts:
                continue
            if key in self.manifest.labels:
                first = self.manifest.labels[key]
                self.problem(name, number, f"duplicate: {key.describe()} is already labeled on line "
                             f"{first.line}: keep one of the two lines")
                continue
            self.manifest.labels[key] = LabelRow(
                key, int(label_text), _SUFFIX_LABEL[match["suffix"]], name, number
            )

    def read_images(self, path: Path, split: str) -> None:
        name, lines = self._lines(path, split)
        for number, row in lines:
            if "," in row:
                columns = len(row.split(","))
                self.problem(name, number, f"expected 1 column (image path), found {columns}: {row!r}")
                continue
            if (problem := self._path_problem(row)) is not None:
                self.problem(name, number, problem)
                continue
            if len(row) > PATH_LENGTH:
                self.problem(name, number, f"path of {len(row)} characters ({row[:60]}...); bonedb keeps at most "
                             f"{PATH_LENGTH}: shorten the folder names")
                continue
            folder, _, filename = row.rpartition("/")
            file_match = _IMAGE_FILE.fullmatch(filename)
            study = self.study_folders.get(folder)
            if study is None or file_match is None:
                # First image of a study folder, or a bad row: the full check, with its messages.
                match = _IMAGE_PATH.match(row)
                if match is None:
                    if number == 1 and not row.endswith(".png"):
                        self.problem(name, number, "looks like a header row; MURA's CSVs have none: delete this line")
                    else:
                        self.problem(name, number, f"malformed image path {row!r}: expected "
                                     + _EXPECTED_IMAGE.format(top=self.top))
                    continue
                key = self._check_parts(name, number, match, split, "image path")
                if key is None:
                    continue
                study = self.study_folders[folder] = (key, _SUFFIX_LABEL[match["suffix"]])
            key, folder_label = study
            assert file_match is not None  # the full check accepted the path, file name and all (rows have no "\n")
            if key.part not in self.parts:
                continue
            if row in self.seen_paths:
                self.problem(name, number, f"duplicate: {row} is already listed on line "
                             f"{self.seen_paths[row][1]}: delete one of the two lines")
                continue
            image_number = int(file_match[1])
            if image_number > LARGEST_NUMBER:
                self.problem(name, number, f"image number {file_match[1]} in {row} is larger than {LARGEST_NUMBER}: "
                             "number images 1, 2, 3, ... as MURA does")
                continue
            if (key, image_number) in self.seen_images:
                first_file, first_line = self.seen_images[(key, image_number)]
                self.problem(name, number, f"duplicate: image{image_number} of {key.describe()} is already "
                             f"listed, in another study folder, on {first_file}:{first_line}")
                continue
            self.seen_paths[row] = (name, number)
            self.seen_images[(key, image_number)] = (name, number)
            self.manifest.images.append(
                ImageRow(row, key, image_number, folder_label, name, number)
            )
