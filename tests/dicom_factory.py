"""DICOM files for the tests, written by pydicom from boneclf.data.synth's radiographs, each carrying planted
identity (odd names, a birth date, accession numbers, institution and physician names, a device serial,
a private tag, comments, free-text descriptions, raw UIDs) that bonedb must never let out.

`expected_pixels` is the display pipeline computed independently of bonedb and of pydicom's helpers,
straight from PS3.3 C.11 (rescale, linear window, LUT lookup, MONOCHROME1 inversion)."""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from boneclf.data.radiograph import draw_radiograph

CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"
DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
UNSUPPORTED = UID("1.2.840.10008.1.2.4.92")  # JPEG 2000 Part 2 multi-component: no decoder for it anywhere
UID_ROOT = "1.2.826.0.1.3680043.8.498."

# Identity planted in every file: none of these may reach anything bonedb writes.
PLANTED = {
    "PatientName": "Quixotlyfeather^Zebulonia^Marmaduke",
    "PatientBirthDate": "19370412",
    "PatientAddress": "17 Brackenmoor Lane, Wimbleshire",
    "OtherPatientNames": "Vantablack^Ermengarde",
    "InstitutionName": "Glimmerwick Infirmary of Saint Ottoline",
    "InstitutionAddress": "4 Thistledown Row, Quoggsby",
    "ReferringPhysicianName": "Oxbury^Phineas^Thaddeus",
    "PerformingPhysicianName": "Snodgrassle^Hepzibah",
    "OperatorsName": "Pumblechook^Wilhelmina",
    "StationName": "XRAY-MIRKWOOD",
    "DeviceSerialNumber": "SN-HEXAGRAM-40417",
    "StudyDate": "20190307",
    "ImageComments": "Patient Quixotlyfeather winced; call 555-0199 Marmalade",
    "PatientComments": "allergic to Fizzlewhump pollen",
}
PRIVATE_VALUE = "PRIVATE-Vorpalwyrm-5521"
# Fragments as they could appear once reformatted (a name's parts, a date with dashes).
FRAGMENTS = ["Quixotlyfeather", "Zebulonia", "Marmaduke", "1937-04-12", "Brackenmoor", "Vantablack", "Ermengarde",
             "Glimmerwick", "Ottoline", "Thistledown", "Quoggsby", "Oxbury", "Phineas", "Snodgrassle", "Hepzibah",
             "Pumblechook", "MIRKWOOD", "HEXAGRAM-40417", "2019-03-07", "555-0199", "Fizzlewhump", "Vorpalwyrm"]


@dataclass
class Spec:
    """One file to write."""

    name: str  # file name under the root (no identity in it: PACS exports often use bare numbers)
    patient: str  # PatientID
    study: str  # which study: the UID is derived from it
    part: str | None = "WRIST"  # BodyPartExamined; None leaves it out
    description: str = "XR EXTREMITY"  # StudyDescription (identity is appended to it)
    modality: str = "CR"
    photometric: str = "MONOCHROME2"
    bits: int = 12
    voi: str = "window"  # window, windows (two: the first counts), full (the identity window), lut, none
    syntax: str = "explicit"  # explicit, rle, jpeg, j2k, unsupported
    rescale: tuple[float, float] | None = None  # (slope, intercept)
    burned_in: bool = False
    abnormal: bool = False
    size: int = 48
    extra: dict = field(default_factory=dict)  # more attributes (keyword -> value)

    @property
    def study_uid(self) -> str:
        return uid_for(f"study:{self.study}")

    @property
    def sop_uid(self) -> str:
        return uid_for(f"sop:{self.name}:{self.study}")

    @property
    def accession(self) -> str:
        return "ACCQZ" + hashlib.sha256(self.study.encode()).hexdigest()[:8].upper()


def uid_for(text: str) -> str:
    return UID_ROOT + str(int(hashlib.sha256(text.encode()).hexdigest()[:24], 16))


def radiograph_values(spec: Spec) -> np.ndarray:
    """The stored values: a synthetic radiograph spread over the bits, inverted for MONOCHROME1."""
    part = (spec.part or "wrist").lower()
    part = part if part in {"elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist"} else "hand"
    picture, _ = draw_radiograph(part, spec.abnormal, spec.size, spec.size, random.Random(spec.name))
    grey = np.asarray(picture, dtype=np.float64)
    if spec.syntax == "jpeg":
        return grey.astype(np.uint8)
    top = 2 ** spec.bits - 1
    values = np.rint(grey / 255 * (top * 0.9) + top * 0.05).astype(np.uint16)
    return (top - values).astype(np.uint16) if spec.photometric == "MONOCHROME1" else values


def write_dicom(root: Path, spec: Spec) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = {"CR": CR_CLASS, "DX": DX_CLASS}.get(spec.modality, CT_CLASS)
    meta.MediaStorageSOPInstanceUID = spec.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.PatientID = spec.patient
    ds.AccessionNumber = spec.accession
    ds.StudyDescription = f"{spec.description} for Marmaduke Quixotlyfeather"
    ds.SeriesDescription = "Oxbury's series"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, spec.sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = spec.study_uid, uid_for(f"series:{spec.study}")
    ds.FrameOfReferenceUID = uid_for(f"frame:{spec.study}")
    ds.Modality = spec.modality
    if spec.part is not None:
        ds.BodyPartExamined = spec.part
    ds.ViewPosition, ds.ImageLaterality = "PA", "L"
    ds.PixelSpacing = [0.139, 0.139]
    if spec.burned_in:
        ds.BurnedInAnnotation = "YES"
    ds.private_block(0x0011, "BONEDB PLANTED", create=True).add_new(0x01, "LO", PRIVATE_VALUE)
    for keyword, value in spec.extra.items():
        setattr(ds, keyword, value)
    values = radiograph_values(spec)
    _pixels(ds, spec, values)
    path = root / spec.name
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _pixels(ds: Dataset, spec: Spec, values: np.ndarray) -> None:
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, spec.photometric
    ds.BitsAllocated = 8 if values.dtype == np.uint8 else 16
    ds.BitsStored = 8 if values.dtype == np.uint8 else spec.bits
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    if spec.rescale:
        ds.RescaleSlope, ds.RescaleIntercept = spec.rescale
    top = 2 ** ds.BitsStored - 1
    low, high = _modality(values, spec).min(), _modality(values, spec).max()
    if spec.voi == "window":
        ds.WindowCenter, ds.WindowWidth = round((low + high) / 2, 1), round(high - low + 1, 1)
    elif spec.voi == "full":
        ds.WindowCenter, ds.WindowWidth = float(2 ** (ds.BitsStored - 1)), float(2 ** ds.BitsStored)
    elif spec.voi == "windows":
        ds.WindowCenter = [round((low + high) / 2, 1), 99.0]
        ds.WindowWidth = [round((high - low) * 0.8, 1), 50.0]
    elif spec.voi == "lut":
        item = Dataset()
        item.LUTDescriptor = [top + 1 if top < 65535 else 0, 0, 12]
        curve = np.rint(((np.arange(top + 1) / top) ** 0.6) * 4095).astype("<u2")
        item.add(DataElement(0x00283006, "OW", curve.tobytes()))
        ds.VOILUTSequence = Sequence([item])
        ds.WindowCenter, ds.WindowWidth = 10.0, 20.0  # the LUT wins over a window when both are given
    if spec.syntax == "rle":
        ds.PixelData = values.tobytes()
        ds.compress(RLELossless, values, generate_instance_uid=False)
    elif spec.syntax == "j2k":
        ds.PixelData = values.tobytes()
        ds.compress(JPEG2000Lossless, values, generate_instance_uid=False)
    elif spec.syntax == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(values).save(buffer, format="JPEG", quality=92)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    elif spec.syntax == "unsupported":
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = UNSUPPORTED
    else:
        ds.PixelData = values.tobytes()


def _modality(values: np.ndarray, spec: Spec) -> np.ndarray:
    slope, intercept = spec.rescale or (1.0, 0.0)
    return values.astype(np.float64) * slope + intercept


def expected_pixels(spec: Spec, decoded: np.ndarray | None = None) -> np.ndarray:
    """What the PNG must hold, computed from PS3.3 C.11 directly. DECODED: the stored values when they are not
    exactly what was written (a lossy JPEG), as an independent decoder (Pillow) reads them."""
    values = radiograph_values(spec) if decoded is None else decoded
    x = _modality(values, spec)
    top = 2 ** (8 if spec.syntax == "jpeg" else spec.bits) - 1
    low, high = _modality(radiograph_values(spec), spec).min(), _modality(radiograph_values(spec), spec).max()
    if spec.voi in ("window", "windows"):
        centre = round((low + high) / 2, 1)
        width = round(high - low + 1, 1) if spec.voi == "window" else round((high - low) * 0.8, 1)
        y = np.clip((x - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * 255
    elif spec.voi == "full":
        centre, width = 2 ** (top.bit_length() - 1), top + 1
        y = np.clip((x - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * 255
    elif spec.voi == "lut":
        curve = np.rint(((np.arange(top + 1) / top) ** 0.6) * 4095)
        y = curve[np.clip(np.rint(x).astype(np.int64), 0, top)] / 4095 * 255
    else:
        y = (x - x.min()) / (x.max() - x.min()) * 255
    y = np.rint(y)
    return 255 - y if spec.photometric == "MONOCHROME1" else y


def truncated(root: Path, spec: Spec, keep: float = 0.7) -> Path:
    path = write_dicom(root, spec)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def variant(spec: Spec, **changes) -> Spec:
    return replace(spec, **changes)


def planted_strings(specs: list[Spec]) -> list[str]:
    """Every planted value, raw UIDs, patient ids and accession numbers included."""
    found = set(PLANTED.values()) | set(FRAGMENTS) | {PRIVATE_VALUE}
    for spec in specs:
        found |= {spec.patient, spec.accession, spec.study_uid, spec.sop_uid, uid_for(f"series:{spec.study}"),
                  uid_for(f"frame:{spec.study}")}
    return sorted(found)
