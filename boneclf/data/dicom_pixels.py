"""A radiograph's pixels as people see them, in 8 bits: decoded by pydicom (JPEG, JPEG 2000 and RLE through
the pylibjpeg plugins), then DICOM's display pipeline (PS3.3 C.11) with pydicom's own helpers:

1. the Modality LUT (or rescale slope and intercept): stored values to modality units;
2. the VOI LUT sequence, else the first window (centre/width) when several are given; with neither, the
   image's own range (what viewers do with an unwindowed image);
3. the result scaled from its output range (the LUT's bits, or the window's range as pydicom defines it) to
   0..255, and inverted for MONOCHROME1, whose low values are white (a DX's Presentation LUT Shape INVERSE
   says the same thing again, so it is not applied twice).
"""

from __future__ import annotations

import numpy as np
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import UID

GREY = ("MONOCHROME1", "MONOCHROME2")


def transfer_syntax_refusal(ds) -> str | None:
    """Why the pixels of DS cannot be decoded here, naming its transfer syntax; None when they can."""
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None:
        return "no Transfer Syntax UID in its file meta information (an incomplete DICOM file)"
    uid = UID(str(uid))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return (f"unsupported transfer syntax {uid.name} ({uid}): bonedb decodes uncompressed, deflated, "
                "JPEG, JPEG-LS, JPEG 2000 and RLE pixel data")
    if not decoder.is_available:
        missing = ", ".join(decoder.missing_dependencies)
        return f"transfer syntax {uid.name} ({uid}) needs a decoder that is not installed: {missing}"
    return None


def has_voi_lut(ds) -> bool:
    sequence = ds.get("VOILUTSequence")
    return bool(sequence) and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]


def has_window(ds) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def display_pixels(ds) -> np.ndarray:
    """DS's single frame as 8-bit grey levels (uint8, rows x columns), as a radiologist's viewer shows it."""
    stored = ds.pixel_array
    if stored.ndim != 2:
        raise ValueError(f"expected one grey frame, found an array of shape {stored.shape}")
    values = apply_modality_lut(stored, ds)
    if has_voi_lut(ds):
        # A LUT is indexed by whole numbers; a rescale may have made floats of them.
        shown = apply_voi(np.rint(values).astype(np.int64), ds, 0).astype(np.float64)
        low, high = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    elif has_window(ds):
        shown = apply_windowing(values.astype(np.float64), ds, 0)
        # Far below and far above the window: the two ends of its output range.
        low, high = (float(v) for v in apply_windowing(np.array([-1e12, 1e12]), ds, 0))
    else:
        shown = values.astype(np.float64)
        low, high = float(shown.min()), float(shown.max())
    span = high - low
    scaled = (shown - low) * (255.0 / span) if span > 0 else np.zeros_like(shown)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        grey = 255 - grey
    return grey
