"""Reading one DICOM file into what bonedb keeps of it: pseudonyms, body part, allow-listed attributes, flags,
and (for images not ingested before) its pixels in 8 bits. pydicom reads; nothing here parses DICOM by hand.

Only radiographs are taken: CR and DX. MG (mammography) is left out on purpose: MURA's parts are the upper
limb, a mammogram would only ever be `unknown`, and its "for processing" raw images need a processing
chain of their own. DX images whose PresentationIntentType is FOR PROCESSING are left out for the same
reason: they are raw detector data, not the picture a radiologist read.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .dicom_identity import PseudonymKey, code_or_none, stored_attributes
from .dicom_parts import find_part
from .dicom_pixels import GREY, display_pixels, transfer_syntax_refusal

RADIOGRAPHS = ("CR", "DX")
SKIPPED_NAMES = {"dicomdir", "desktop.ini", "thumbs.db", ".ds_store"}
REQUIRED = ("SOPInstanceUID", "StudyInstanceUID", "PatientID", "PixelData")
SKIP_ADVICE = ", or leave it out with --skip-bad"


def or_skip(skip_bad: bool) -> str:
    """The advice a problem ends with: --skip-bad, only to whoever has not passed it already."""
    return "" if skip_bad else SKIP_ADVICE


@dataclass
class DicomImage:
    """One radiograph as bonedb keeps it. `source` is the file under ROOT: shown to the steward, never stored."""

    source: str
    patient: str  # pseudonyms
    study: str
    sop: str
    accession: str | None
    part: str
    part_source: str | None
    part_code: str  # BodyPartExamined as a code: how an unknown part is listed
    attributes: dict
    flag_reason: str | None = None  # "may show identity in pixels": why
    pixels: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Outcome:
    """What reading a file gave: an image, a skip (left out on purpose, with why), or a problem."""

    source: str
    image: DicomImage | None = None
    skipped: str | None = None
    problem: str | None = None


def dicom_candidates(root: Path) -> list[str]:
    """Every file under ROOT (DICOM files have any name, or none), sorted; hidden files and DICOMDIR aside."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.lower() in SKIPPED_NAMES:
                continue
            found.append((Path(folder) / name).relative_to(root).as_posix())
    return found


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom warns about odd values by quoting them; a quoted birth date on a steward's terminal or in a
    captured log is a leak, so its warnings and log lines are silenced while a file is read."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def text_in_pixels(pixels: np.ndarray) -> str | None:
    """Why PIXELS may show a patient's identity as burned-in text, or None.

    HOOK (issue 23): `boneclf.data.markers` is finding burned-in text (letters, digits, dates) in radiographs.
    Once it lands, call it here and return e.g. "text found in pixels" when it finds any; every DICOM
    ingest then flags those images like BurnedInAnnotation YES ones (exports leave them out, audit lists
    them). Until then only the file's own BurnedInAnnotation raises the flag."""
    return None


def read_dicom(data: BinaryIO, source: str, key: PseudonymKey, terms: dict[str, str], known_sops: set[str],
               text_detector=text_in_pixels, skip_bad: bool = False) -> Outcome:
    """Read DATA, the bytes of the file at SOURCE. Pixels are decoded (and checked) only for images whose SOP
    pseudonym is new. Messages name what is wrong in bonedb's words, never quoting a value from the file.
    SKIP_BAD: the ingest leaves problems out, so their messages no longer advise it."""
    advice = or_skip(skip_bad)
    with quiet_pydicom():
        try:
            ds = pydicom.dcmread(data)
        except InvalidDicomError:
            return Outcome(source, skipped="not a DICOM file (no DICM header)")
        except Exception as exc:  # pydicom raises many kinds on broken files
            return Outcome(source, problem=f"unreadable DICOM file ({type(exc).__name__}): restore it{advice}")
        missing = [keyword for keyword in REQUIRED if _empty(ds.get(keyword))]
        modality = code_or_none(ds.get("Modality")) or "(none)"
        if modality not in RADIOGRAPHS and modality != "(none)":
            return Outcome(source, skipped=f"modality {modality}: bonedb takes radiographs ({', '.join(RADIOGRAPHS)})")
        if missing:
            return Outcome(source, problem=f"incomplete DICOM file (truncated?): no {', '.join(missing)}; restore "
                                           f"it{advice}")
        skip = _not_a_picture(ds)
        if skip:
            return Outcome(source, skipped=skip)
        refusal = transfer_syntax_refusal(ds)
        if refusal:
            return Outcome(source, problem=f"{refusal}; convert it (e.g. to Explicit VR Little Endian){advice}")
        sop = key.pseudonym("SOPInstanceUID", str(ds.SOPInstanceUID))
        pixels = None
        if sop not in known_sops:
            try:
                pixels = display_pixels(ds)
            except Exception as exc:
                return Outcome(source, problem=f"pixel data cannot be decoded ({type(exc).__name__}; truncated?): "
                                               f"restore it{advice}")
        found = find_part(ds, terms)
        accession = str(ds.get("AccessionNumber") or "").strip()
        image = DicomImage(
            source=source,
            patient=key.pseudonym("PatientID", str(ds.PatientID)),
            study=key.pseudonym("StudyInstanceUID", str(ds.StudyInstanceUID)),
            sop=sop,
            accession=key.pseudonym("AccessionNumber", accession) if accession else None,
            part=found.part, part_source=found.source, part_code=found.code,
            attributes=stored_attributes(ds),
            pixels=pixels,
        )
    image.flag_reason = _identity_in_pixels(ds, pixels, text_detector)
    return Outcome(source, image=image)


def _empty(value) -> bool:
    # Pixel data is bytes (never made text: it may be megabytes); the rest are short strings.
    return not value if isinstance(value, bytes) else not str(value or "").strip()


def _not_a_picture(ds) -> str | None:
    photometric = code_or_none(ds.get("PhotometricInterpretation")) or "(none)"
    if photometric not in GREY:
        return f"photometric interpretation {photometric}: radiographs are {' or '.join(GREY)}"
    if int(ds.get("NumberOfFrames") or 1) > 1:
        return "several frames: a radiograph is one picture"
    if code_or_none(ds.get("PresentationIntentType")) == "FOR PROCESSING":
        return "FOR PROCESSING: raw detector data, not the picture that was read"
    return None


def _identity_in_pixels(ds, pixels, text_detector) -> str | None:
    """Why the picture may show who the patient is: the file says so, or (when a detector is given) text
    is found in it."""
    if code_or_none(ds.get("BurnedInAnnotation")) == "YES":
        return "BurnedInAnnotation YES"
    if text_detector is not None and pixels is not None:
        return text_detector(pixels)
    return None
