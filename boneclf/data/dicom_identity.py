"""What bonedb keeps of a DICOM file's identity: keyed pseudonyms, and an allow-list of harmless attributes.

**Pseudonyms.** PatientID, StudyInstanceUID and SOPInstanceUID are replaced by HMAC-SHA256 under a
secret key (`--key-file`, else `BONEDB_PSEUDONYM_KEY`), hex, truncated to 128 bits. The same key gives
the same pseudonyms on every ingest and backend, so leak groups and splits hold across ingests; without
the key nobody can recompute them from a patient's id (a plain hash could be, by hashing candidate ids).
There is no fallback: no key, no ingest. The key is never stored, logged or printed; only its key id (an
HMAC of a fixed text under the key) is logged, so that a later ingest with another key is refused instead
of silently splitting every patient in two.

**The allow-list.** DICOM PS3.15 Annex E (the Basic Application Level Confidentiality Profile, table
E.1-1) lists the attributes that identify a patient, directly or by linkage: names, birth dates, IDs,
accession numbers, institutions, physicians and operators, device serial numbers, dates and times,
free-text descriptions and comments, UIDs, and private attributes. Rather than remove those (a deny
list misses whatever a device adds), bonedb stores only `STORED_ATTRIBUTES`, each chosen because:

- Annex E does not list it, so the profile itself retains it: Modality, PixelSpacing,
  ImagerPixelSpacing, ViewPosition, ImageLaterality, Laterality, BitsStored, PhotometricInterpretation,
  Rows, Columns, BodyPartExamined, PresentationIntentType, BurnedInAnnotation;
- and its value is a code string (CS: at most 16 of A-Z, 0-9, space, underscore) or numbers, checked as
  such when read, so free text cannot ride in under an allowed keyword (a value that fails is dropped).

Everything else is never stored: Annex E's "X"/"Z"/"D" attributes (names, dates, accession numbers,
institution and physician names, device serials, comments), the descriptions (read, in memory only, to
find the body part), AccessionNumber (read, in memory only, to match a labels CSV by its pseudonym), the
UIDs ("U": replaced by the pseudonyms above, consistent within and across ingests, as the profile asks),
and every private tag (the profile keeps them only under its Retain Safe Private option; bonedb never
reads them). Pixels are Annex E's remaining risk: an image whose BurnedInAnnotation is YES is flagged
"may show identity in pixels" (the profile's Clean Pixel Data option is not attempted).

`deid` and `dicognito` rewrite DICOM files by recipes of what to remove. bonedb writes no DICOM at all:
it keeps pixels and this short list, which is simpler to verify than any recipe, so neither is used.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boneclf.errors import BonedbError

KEY_ENV = "BONEDB_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
PSEUDONYM_HEX = 32  # 128 bits of the HMAC: collisions are out of reach for any hospital's archive


@dataclass(frozen=True)
class PseudonymKey:
    """The secret behind every pseudonym. Its repr hides the secret, so no log or traceback can show it."""

    secret: bytes = field(repr=False)
    source: str  # "key file" or the environment variable's name: what the log records instead of the key

    @property
    def key_id(self) -> str:
        """Names the key without revealing it: the same key, the same id."""
        return hmac.new(self.secret, b"bonedb pseudonym key id", hashlib.sha256).hexdigest()[:12]

    def pseudonym(self, keyword: str, value: str) -> str:
        """HMAC-SHA256 of VALUE under the key, separated by its DICOM KEYWORD (so a PatientID equal to some
        UID does not share its pseudonym), as PSEUDONYM_HEX hex digits."""
        message = f"{keyword}\x00{value.strip()}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


def load_key(key_file: Path | None, environ: Mapping[str, str] = os.environ) -> PseudonymKey:
    """The key from KEY_FILE (its bytes, a final newline dropped), else from $BONEDB_PSEUDONYM_KEY; refused
    when neither is there or it is too short to be secret. Messages never quote the key."""
    if key_file is not None:
        try:
            secret = Path(key_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise BonedbError(f"--key-file {key_file}: cannot read it ({exc.strerror}); nothing was written") from None
        source = "key file"
    elif environ.get(KEY_ENV):
        secret, source = environ[KEY_ENV].encode(), KEY_ENV
    else:
        raise BonedbError(f"no pseudonym key: pass --key-file FILE or set {KEY_ENV} (a secret of at least "
                          f"{MIN_KEY_BYTES} bytes, e.g. `head -c 32 /dev/urandom | base64 > key`); bonedb never "
                          "ingests DICOM without one; nothing was written")
    if len(secret) < MIN_KEY_BYTES:
        raise BonedbError(f"the pseudonym key from the {source} is {len(secret)} bytes: use at least "
                          f"{MIN_KEY_BYTES} random bytes, or pseudonyms could be guessed; nothing was written")
    return PseudonymKey(secret, source)


_CODE = re.compile(r"[A-Z0-9 _]{1,16}")


def _code(value: Any) -> str | None:
    """A CS value (PS3.5: upper-case letters, digits, space, underscore, at most 16), else None."""
    text = str(value).strip() if value is not None else ""
    return text if _CODE.fullmatch(text) else None


def _integer(value: Any) -> int | None:
    try:
        return int(value) if value is not None and int(value) == float(value) else None
    except (TypeError, ValueError):
        return None


def _pair(value: Any) -> list[float] | None:
    """A two-number DS value (row and column spacing, mm), else None."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == 2 and all(math.isfinite(n) and n > 0 for n in numbers) else None


# Keyword -> the check its value must pass to be stored. See the module's docstring for why each is here.
STORED_ATTRIBUTES: dict[str, Callable[[Any], Any]] = {
    "Modality": _code,
    "PixelSpacing": _pair,
    "ImagerPixelSpacing": _pair,
    "ViewPosition": _code,
    "ImageLaterality": _code,
    "Laterality": _code,
    "BitsStored": _integer,
    "PhotometricInterpretation": _code,
    "Rows": _integer,
    "Columns": _integer,
    "BodyPartExamined": _code,
    "PresentationIntentType": _code,
    "BurnedInAnnotation": _code,
}


def stored_attributes(ds) -> dict[str, Any]:
    """The allow-listed attributes DS has, by keyword, each value checked; nothing else is ever read here."""
    kept = {}
    for keyword, check in STORED_ATTRIBUTES.items():
        if keyword in ds:
            value = check(ds.get(keyword))
            if value is not None:
                kept[keyword] = value
    return kept


def code_or_none(value: Any) -> str | None:
    """A CS value safe to show or store (a modality, a body part code), else None."""
    return _code(value)
