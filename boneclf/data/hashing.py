"""Content and perceptual hashes of image files."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

_SIDE = 32  # the picture is reduced to 32 x 32 before the transform
_KEEP = 16  # the 16 x 16 lowest frequencies make the 256-bit hash


def _dct_matrix(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(_SIDE)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def perceptual_hash(image: Image.Image) -> str:
    """A DCT hash: which low-frequency coefficients of a 32 x 32 copy lie above their median.

    Low frequencies carry the shape of the picture, not its pixel noise or encoding, so a resized
    or re-encoded copy keeps almost every bit. Measured on 1,392 synth radiographs (96 px): copies
    resized to 50-150% and saved as JPEG at quality 50-90 differ by 2.8 of 256 bits on average and
    by 12 at the 99th percentile; the closest two of the ~968,000 distinct pairs differ by 20.
    """
    small = np.asarray(image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ small @ _DCT.T)[:_KEEP, :_KEEP].flatten()
    bits = low > np.median(low[1:])  # the DC term (overall brightness) stays out of the median
    return np.packbits(bits).tobytes().hex()


# --- The near-duplicate hash -------------------------------------------------------------------
#
# 64 bits: the signs of 63 low-frequency DCT coefficients of the central part of the picture
# (bit 0, the DC term or brightness, is always 0). Signs, not "above the median", because the 8
# flips and 90-degree rotations of a picture then act on the hash as bit operations: a left-right
# flip negates the coefficients of odd horizontal frequency v (XOR with a mask), an up-down flip
# those of odd vertical frequency u, and a transpose swaps (u, v) with (v, u) (a bit permutation).
# So one stored hash stands for all 8 orientations, and matching tries them on the hash alone.
# The coefficients are the lowest by u + v (a triangle, symmetric under the transpose), not an
# 8 x 8 square: the highest frequencies of a square change sign first under a few degrees of
# rotation or a small crop. The central crop drops the black corners a small rotation adds.

NEAR_SIDE = 32
NEAR_CROP = 0.70  # keep the central 70 % of each side
NEAR_METHOD = "dct63-triangle-sign-dihedral"
_DIAGONAL = 10
# u + v <= 10 holds 66 coefficients; (0, 10) and (10, 0), the thinnest stripes, are left out: 64 with DC.
NEAR_COEFFICIENTS = [(u, s - u) for s in range(_DIAGONAL + 1) for u in range(s + 1)
                     if (u, s - u) not in ((0, _DIAGONAL), (_DIAGONAL, 0))]
assert len(NEAR_COEFFICIENTS) == 64
_NEAR_DCT = _dct_matrix(NEAR_SIDE)[:_DIAGONAL + 1]
_ROWS = np.array([u for u, _ in NEAR_COEFFICIENTS])
_COLS = np.array([v for _, v in NEAR_COEFFICIENTS])


def _area_average(pixels: np.ndarray, axis: int, size: int = NEAR_SIDE) -> np.ndarray:
    """PIXELS averaged over SIZE equal intervals along AXIS, each pixel weighted by its overlap.

    Done with cumulative sums rather than Pillow's resize, whose box filter is not mirror-symmetric
    for non-integer ratios (a flipped picture would not give the flipped thumbnail), and rather than
    a matrix product, which OpenBLAS spreads over threads: inside ingest's thread pool that made
    each hash ten times slower on a busy machine."""
    n = pixels.shape[axis]
    sums = np.concatenate([np.zeros_like(np.take(pixels, [0], axis=axis)), np.cumsum(pixels, axis=axis)], axis=axis)
    edges = np.linspace(0, n, size + 1)
    low = np.minimum(np.floor(edges).astype(int), n - 1)
    frac = (edges - low).reshape([-1 if a == axis else 1 for a in range(pixels.ndim)])
    below = np.take(sums, low, axis=axis)
    at_edges = below + frac * (np.take(sums, low + 1, axis=axis) - below)
    return np.diff(at_edges, axis=axis) / (n / size)


def near_hash_bits(image: Image.Image) -> np.ndarray:
    """The 64 near-hash bits of IMAGE (bool, in NEAR_COEFFICIENTS order)."""
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    height, width = pixels.shape
    # Whole pixels, the same number off each side: a flipped picture gives the flipped crop exactly.
    dx, dy = round(width * (1 - NEAR_CROP) / 2), round(height * (1 - NEAR_CROP) / 2)
    centre = pixels[dy:height - dy, dx:width - dx]
    small = _area_average(_area_average(centre, 0), 1)
    low = _NEAR_DCT @ (small - small.mean()) @ _NEAR_DCT.T
    bits = low[_ROWS, _COLS] > 0
    bits[0] = False
    return bits


def near_hash(image: Image.Image) -> str:
    """The near-duplicate hash as 16 hex digits (see above)."""
    return np.packbits(near_hash_bits(image)).tobytes().hex()


# Bit positions counted from the most significant bit, as np.packbits lays them out.
_SHIFT = (63 - np.arange(64)).astype(np.uint64)
_ODD_V = np.uint64(sum(1 << int(s) for s, v in zip(_SHIFT, _COLS) if v % 2))
_ODD_U = np.uint64(sum(1 << int(s) for s, u in zip(_SHIFT, _ROWS) if u % 2))
_TRANSPOSED = [NEAR_COEFFICIENTS.index((v, u)) for u, v in NEAR_COEFFICIENTS]


def _transpose(hashes: np.ndarray) -> np.ndarray:
    """Swap the bits of coefficients (u, v) and (v, u) in every hash (uint64 array)."""
    out = np.zeros_like(hashes)
    for bit, target in enumerate(_TRANSPOSED):
        out |= ((hashes >> _SHIFT[bit]) & np.uint64(1)) << _SHIFT[target]
    return out


def dihedral_variants(hashes: np.ndarray) -> np.ndarray:
    """(8, n) uint64: the hashes of the 8 flips and 90-degree rotations of each picture, identity first."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    transposed = _transpose(hashes)
    rows = []
    for base in (hashes, transposed):
        for mask in (np.uint64(0), _ODD_V, _ODD_U, _ODD_V ^ _ODD_U):  # both flips: (-1)^(u+v)
            rows.append(base ^ mask)
    return np.stack(rows)


# --- The rotation signature --------------------------------------------------------------------
#
# The near hash above loses copies turned by a few degrees (recall 0.18 at 5 degrees): its DCT
# signs are taken on the picture's axes. The rotation signature samples the blurred picture on a
# polar grid about its centre instead, POLAR_RINGS radii x POLAR_ANGLES angles, inside the disc
# inscribed in the frame (which a rotation about the centre with black corners keeps whole). A
# rotation is then a circular shift along the angle axis, a quarter turn a shift of
# POLAR_ANGLES / 4, and a flip reverses the angle axis, so comparing two signatures is finding the
# best circular shift (forward and reversed) of their cross-correlation, restricted to shifts
# within POLAR_MAX_TURN degrees of a quarter turn: a wider search would also line up different
# pictures drawn from one template at another angle. Radii are fractions of the shorter side, so
# rescaling keeps the signature; samples are stored as grey levels (uint8) and compared by
# normalised correlation, which ignores brightness and contrast. Measured (BENCHMARKS.md, "Near
# duplicates", 280 synthetic radiographs): copies turned 2 to 15 degrees, alone or after a quarter
# turn or flip, score at least 0.994; of 5,460 pairs of different same-part pictures (drawn from one
# template each, so alike) 3 reach 0.985 and the closest 0.992. It does not help with crops off one
# side (they move the centre) or with a canvas grown to hold the turned picture (it changes the
# scale): the near hash still carries those.

POLAR_RINGS = 8
POLAR_ANGLES = 144  # 2.5 degrees apart
POLAR_RADIUS = 0.9  # outermost ring at 90 % of the inscribed disc (a small crop stays outside it)
POLAR_MAX_TURN = 15.0  # degrees either side of a quarter turn
POLAR_SIDE = 64  # the shorter side is averaged down to this many pixels first
POLAR_METHOD = f"polar{POLAR_RINGS}x{POLAR_ANGLES}-corr-15deg"
_RADII = POLAR_RADIUS * POLAR_SIDE / 2 * (np.arange(POLAR_RINGS) + 0.5) / POLAR_RINGS
_ANGLES = 2 * np.pi * np.arange(POLAR_ANGLES) / POLAR_ANGLES


def rotation_signature(image: Image.Image) -> bytes:
    """POLAR_RINGS x POLAR_ANGLES grey levels of IMAGE on the polar grid (see above), row by row."""
    pixels = np.asarray(image.convert("L"), dtype=np.float32)  # float32 sums: exact enough, twice as fast
    height, width = pixels.shape
    shorter = min(height, width)
    rows, cols = max(2, round(height * POLAR_SIDE / shorter)), max(2, round(width * POLAR_SIDE / shorter))
    small = _area_average(_area_average(pixels, 0, rows), 1, cols).astype(np.float64)
    y = (rows - 1) / 2 + _RADII[:, None] * np.sin(_ANGLES)[None, :]
    x = (cols - 1) / 2 + _RADII[:, None] * np.cos(_ANGLES)[None, :]
    y0 = np.clip(np.floor(y).astype(int), 0, rows - 2)
    x0 = np.clip(np.floor(x).astype(int), 0, cols - 2)
    fy, fx = np.clip(y - y0, 0, 1), np.clip(x - x0, 0, 1)
    values = (small[y0, x0] * (1 - fy) * (1 - fx) + small[y0 + 1, x0] * fy * (1 - fx)
              + small[y0, x0 + 1] * (1 - fy) * fx + small[y0 + 1, x0 + 1] * fy * fx)  # bilinear
    return np.clip(np.round(values), 0, 255).astype(np.uint8).tobytes()


def _normalised(signatures: np.ndarray) -> np.ndarray:
    """(n, rings, angles) float32, each signature with zero mean and unit norm."""
    values = signatures.reshape(len(signatures), POLAR_RINGS, POLAR_ANGLES).astype(np.float32)
    values -= values.mean(axis=(1, 2), keepdims=True)
    norms = np.sqrt((values ** 2).sum(axis=(1, 2), keepdims=True))
    return values / np.maximum(norms, 1e-6)


def signature_array(signatures: list[bytes]) -> np.ndarray:
    """(n, rings * angles) uint8 from stored signatures."""
    return np.frombuffer(b"".join(signatures), dtype=np.uint8).reshape(len(signatures), -1)


_STEP = 360 / POLAR_ANGLES
_ALLOWED = np.zeros(POLAR_ANGLES, dtype=bool)
for _quarter in range(4):
    for _shift in range(-int(POLAR_MAX_TURN / _STEP), int(POLAR_MAX_TURN / _STEP) + 1):
        _ALLOWED[(_quarter * POLAR_ANGLES // 4 + _shift) % POLAR_ANGLES] = True


def rotation_spectra(signatures: np.ndarray) -> np.ndarray:
    """(n, rings, angles // 2 + 1) complex64: each normalised signature's spectrum along the angle axis,
    computed once per picture so that scoring a pair is a product and one inverse transform."""
    return np.fft.rfft(_normalised(signatures), axis=2).astype(np.complex64)


def _inverse_at(shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real matrices (cos, sin) with irfft(X)[shifts] = Re(X) @ cos - Im(X) @ sin: the inverse transform at
    only the shifts asked for, as one matrix product over many pairs (faster than an FFT per pair)."""
    k = np.arange(POLAR_ANGLES // 2 + 1)[:, None]
    weight = np.where((k == 0) | (k == POLAR_ANGLES // 2), 1.0, 2.0) / POLAR_ANGLES
    phase = 2 * np.pi * k * shifts[None, :] / POLAR_ANGLES
    return (weight * np.cos(phase)).astype(np.float32), (weight * np.sin(phase)).astype(np.float32)


_SHIFTS = np.flatnonzero(_ALLOWED)
_STRAIGHT = _inverse_at(_SHIFTS)
# Correlating with the flipped signature b[::-1] is a convolution: c[s] = conv[(s + angles - 1) % angles].
_FLIPPED = _inverse_at((_SHIFTS + POLAR_ANGLES - 1) % POLAR_ANGLES)


def spectra_scores(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """`rotation_scores` from spectra (`rotation_spectra`) of equal count."""
    best = np.full(len(first), -1.0, dtype=np.float32)
    # Summed over rings before the inverse transform (it is linear): one transform per pair and direction.
    for product, (cos, sin) in (((first * np.conj(second)).sum(axis=1), _STRAIGHT),
                                ((first * second).sum(axis=1), _FLIPPED)):
        correlation = product.real @ cos - product.imag @ sin
        best = np.maximum(best, correlation.max(axis=1))
    return best


def rotation_scores(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Best normalised correlation of each pair of signatures (uint8 rows of equal count) over the
    allowed turns, flipped or not: 1.0 for the same picture, whatever its orientation."""
    return spectra_scores(rotation_spectra(first), rotation_spectra(second))


def rotation_invariants(signatures: np.ndarray, orders: int = 6, spectra: np.ndarray | None = None) -> np.ndarray:
    """(n, rings * orders) float32 unit vectors that a turn or flip of the picture leaves alone: the
    magnitudes of the lowest angular frequencies of each ring. Close for copies, so they choose the
    candidate pairs that `rotation_scores` then checks. `spectra`: the signatures' `rotation_spectra`
    when already computed."""
    spectra = rotation_spectra(signatures) if spectra is None else spectra
    flat = np.abs(spectra[:, :, :orders]).reshape(len(spectra), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)
