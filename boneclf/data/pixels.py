"""The one limit on an image's pixels, checked from its header before anything decodes it.

A 69-byte PNG can claim 50,000 x 50,000 pixels, and a valid 194 KB PNG can hold 20,000 x 10,000:
decoding either takes gigabytes (TensorFlow's decoder has no limit of its own). Every path that
decodes an image file (Pillow's: ingest --verify, ingest-folder, duplicates, audit, thumbnails;
TensorFlow's: training, evaluation, prediction, Grad-CAM, through ml.image_spec) asks `check_pixels`
first, which reads only the header. A file over the limit is an undecodable image like any other:
named, and left out under --skip-bad.

The limit is MAX_PIXELS, 8192 x 8192 (64 megapixels: a 43 cm detector plate at 50 micrometres fits);
BONEDB_MAX_PIXELS overrides it. Pixels are width x height, times the frames of an animated GIF or
WebP, which TensorFlow decodes all of.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from boneclf.errors import BonedbError

MAX_PIXELS = 8192 * 8192
ENV_VAR = "BONEDB_MAX_PIXELS"
# Formats whose size this module reads from the header itself (TensorFlow decodes these; JPEG XL too,
# which is refused here since neither this module nor Pillow can read its size).
HEADER_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")


class ImageTooLarge(BonedbError):
    """More pixels than the limit: decoding would take more memory than any X-ray needs."""


class UnknownFormat(BonedbError):
    """Bytes whose size no header reader knows: nothing may decode them unbounded."""


@dataclass(frozen=True)
class Dimensions:
    width: int
    height: int
    frames: int = 1
    area: int = 0  # pixels of all frames, when frames differ from the canvas; else width x height x frames

    @property
    def pixels(self) -> int:
        return max(self.area, self.width * self.height * self.frames)

    def describe(self) -> str:
        frames = f" x {self.frames} frames" if self.frames > 1 else ""
        return f"{self.width} x {self.height}{frames} = {self.pixels:,} pixels"


def max_pixels() -> int:
    """MAX_PIXELS, or $BONEDB_MAX_PIXELS when set (a whole number of pixels, e.g. 100000000)."""
    text = os.environ.get(ENV_VAR, "").replace("_", "").replace(",", "").strip()
    if not text:
        return MAX_PIXELS
    if not text.isdigit() or int(text) <= 0:
        raise BonedbError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: write a whole number of pixels, e.g. 100000000")
    return int(text)


def check_pixels(data: bytes) -> Dimensions:
    """The image's dimensions from its header, or ImageTooLarge when they exceed the limit. Bytes in a
    format no header reader here or in Pillow knows raise UnknownFormat. Decodes nothing."""
    found = dimensions(data)
    if found is None:
        raise UnknownFormat("not an image format bonedb reads (PNG, JPEG, GIF, BMP or WebP), or a truncated header")
    limit = max_pixels()
    if found.pixels > limit:
        raise ImageTooLarge(f"{found.describe()}, over bonedb's limit of {limit:,} ({ENV_VAR}): "
                            "too large to decode safely")
    return found


def open_image(data: bytes) -> Image.Image:
    """The image opened lazily by Pillow (header read, no pixel decoded) once `check_pixels` passed."""
    check_pixels(data)
    _raise_pillows_limit()
    return Image.open(io.BytesIO(data))


def _raise_pillows_limit() -> None:
    """Pillow warns above its own limit (89 megapixels) and refuses above twice that: when BONEDB_MAX_PIXELS
    allows more, lift Pillow's to match, so that an image within bonedb's limit opens without a word."""
    limit = max_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit


def dimensions(data: bytes) -> Dimensions | None:
    """Width, height and frames read from the header; None when the format or header is unknown."""
    try:
        for signature, reader in _READERS:
            if data.startswith(signature):
                return reader(data)
    except (struct.error, IndexError):  # a header cut short
        return None
    return _pillow_dimensions(data)


def _pillow_dimensions(data: bytes) -> Dimensions | None:
    """Any other format Pillow knows, from its lazy open (which reads the header only)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return Dimensions(*image.size, max(1, getattr(image, "n_frames", 1)))
    except Image.DecompressionBombError as exc:  # Pillow's own limit, twice its warning's
        raise ImageTooLarge(f"{exc}".rstrip(".") + f" (bonedb's limit: {max_pixels():,}, {ENV_VAR})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None


def _png(data: bytes) -> Dimensions | None:
    if data[12:16] != b"IHDR":
        return None
    return Dimensions(*struct.unpack(">II", data[16:24]))


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # markers without a length: TEM, RST0-7, SOI


def _jpeg(data: bytes) -> Dimensions | None:
    position = 2
    while True:
        while data[position] != 0xFF:  # bytes between segments are not allowed; tolerate them as decoders do
            position += 1
        while data[position] == 0xFF:  # fill bytes
            position += 1
        marker = data[position]
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[position + 4:position + 8])
            if not height:  # "given later", in a DNL marker after the pixels: unknowable before decoding
                raise UnknownFormat("a JPEG that gives its height only after its pixels (DNL): its size "
                                    "cannot be checked before decoding; re-save it")
            return Dimensions(width, height)
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if marker not in _STANDALONE:
            position += struct.unpack(">H", data[position + 1:position + 3])[0]
        position += 1


def _gif(data: bytes) -> Dimensions | None:
    width, height = struct.unpack("<HH", data[6:10])
    position = 13 + _colour_table(data[10])
    frames, area = 0, 0
    while position < len(data):
        block = data[position]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            position = _skip_sub_blocks(data, position + 2)
        elif block == 0x2C:  # image descriptor: a frame, as large as its own size or the canvas
            frame_width, frame_height = struct.unpack("<HH", data[position + 5:position + 9])
            frames += 1
            area += max(width * height, frame_width * frame_height)
            position = _skip_sub_blocks(data, position + 11 + _colour_table(data[position + 9]))
        else:
            break
    return Dimensions(width, height, max(frames, 1), area)


def _colour_table(flags: int) -> int:
    return 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(data: bytes, position: int) -> int:
    while data[position]:
        position += data[position] + 1
    return position + 1


def _bmp(data: bytes) -> Dimensions | None:
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return Dimensions(*struct.unpack("<HH", data[18:22]))
    width, height = struct.unpack("<ii", data[18:26])
    return Dimensions(abs(width), abs(height))  # a negative height is a top-down bitmap


def _webp(data: bytes) -> Dimensions | None:
    if data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return Dimensions(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return Dimensions((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        frames = _count_chunks(data, b"ANMF") if data[20] & 0x02 else 1
        return Dimensions(width, height, max(frames, 1))
    return None


def _count_chunks(data: bytes, name: bytes) -> int:
    count, position = 0, 12
    while position + 8 <= len(data):
        size = struct.unpack("<I", data[position + 4:position + 8])[0]
        count += data[position:position + 4] == name
        position += 8 + size + (size & 1)
    return count


_READERS = (
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"\xff\xd8", _jpeg),
    (b"GIF87a", _gif),
    (b"GIF89a", _gif),
    (b"BM", _bmp),
    (b"RIFF", _webp),
)
