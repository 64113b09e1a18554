"""Image decode, resize and encode with OpenCV's numbers, on Pillow and numpy.

Caffe reads images with OpenCV (``cv::imread`` / ``cv::imdecode``) and resizes them
with ``cv::resize`` (bilinear). These functions reproduce what those calls return,
so a database built here holds the pixels Caffe's would:

- ``decode_image(data, color=True)``: H×W×3 uint8 in **BGR** order
  (``IMREAD_COLOR``), or H×W×1 for ``color=False`` (``IMREAD_GRAYSCALE``).
  ``color=None`` keeps the file's own kind (1 channel for a gray file, else 3),
  like Caffe's ``DecodeDatumToCVMatNative`` less any alpha channel.
  ``decode_image_view`` returns the same pixels as a read-only view (no copy).
- ``resize_bilinear(img, height, width)``: ``cv::resize(..., INTER_LINEAR)`` on
  uint8, bit-exact with OpenCV's fixed-point path (see its docstring).
- ``read_image(path, color, height, width)``: Caffe's ``ReadImageToCVMat``.
- ``encode_image(img, ext)``, ``image_type(path_or_bytes)``.

How each decode matches OpenCV (checked against cv2 4.x in tests/data/test_image.py):

- JPEG colour: Pillow and OpenCV both use libjpeg-turbo's default (ISLOW DCT,
  fancy upsampling), so the pixels are the same.
- JPEG gray: OpenCV asks libjpeg for ``JCS_GRAYSCALE``, which is the decoded
  luma plane, not a conversion of the RGB result (they differ by up to ~16
  levels). Pillow's ``draft("L")`` asks libjpeg for exactly that.
- PNG gray from a colour file: libpng's ``png_set_rgb_to_gray(1, 0.299, 0.587)``,
  i.e. ``(9797·R + 19234·G + 3737·B) >> 15`` (truncating), alpha stripped.
- Other formats (BMP, TIFF, WebP, ...) gray: OpenCV's BGR→gray,
  ``(1868·B + 9617·G + 4899·R + 8192) >> 14``.
- 16-bit PNGs become 8-bit by keeping the high byte (libpng's strip_16).
- EXIF orientation is applied, as ``cv::imdecode`` does for colour and gray reads
  since OpenCV 3.1.

Known differences from OpenCV: a 16-bit *colour* PNG read as gray may be one
level off (Pillow exposes only the high bytes, libpng converts the 16-bit
values); CMYK JPEGs may be one level off; a truncated file is an error here,
where libjpeg returns the partial image with a warning.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import DataError

_GRAY_MODES = ("1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")

# Magic bytes -> canonical type name (the name --encode_type uses).
_MAGIC = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)

# --encode_type spellings -> (canonical name, Pillow format, save options).
# JPEG quality 95 is OpenCV's IMWRITE_JPEG_QUALITY default; PNG level 1 its
# IMWRITE_PNG_COMPRESSION default. The bytes differ from OpenCV's encoder, the
# decoded pixels of lossless formats do not.
_ENCODERS = {
    "jpg": ("jpg", "JPEG", {"quality": 95}),
    "jpeg": ("jpg", "JPEG", {"quality": 95}),
    "png": ("png", "PNG", {"compress_level": 1}),
    "bmp": ("bmp", "BMP", {}),
    "tif": ("tiff", "TIFF", {}),
    "tiff": ("tiff", "TIFF", {}),
    "webp": ("webp", "WEBP", {"lossless": True}),
}
ENCODE_TYPES = frozenset(v[0] for v in _ENCODERS.values())  # canonical names encode_image writes


_PIL = None


def _pil():
    global _PIL
    if _PIL is None:  # imported once (decoding is on the data layers' hot path)
        from PIL import Image, ImageOps

        _PIL = (Image, ImageOps)
    return _PIL


def canonical_type(ext: str) -> str:
    """``'.JPEG'`` -> ``'jpg'``; the canonical name of an encode type, or DataError."""
    e = ext.lower().lstrip(".")
    if e not in _ENCODERS:
        raise DataError(f"unknown image type '{ext}'; known: {', '.join(sorted(_ENCODERS))}")
    return _ENCODERS[e][0]


def image_type(path_or_bytes) -> str | None:
    """The file's real type from its first bytes: 'jpg', 'png', 'bmp', 'tiff', 'gif', 'webp' or None."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        head = bytes(path_or_bytes[:16])
    else:
        try:
            with open(path_or_bytes, "rb") as f:
                head = f.read(16)
        except OSError as e:
            raise DataError(f"{path_or_bytes}: cannot read ({e.strerror or e})") from None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def _open(data: bytes, what: str):
    Image, _ = _pil()
    try:
        return Image.open(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise DataError(f"{what}: not a decodable image ({e})") from None


def _orientation(im) -> int:
    if im.format == "JPEG" and "exif" not in im.info:
        return 1  # no APP1 Exif segment, nothing to read (getexif() costs ~70 us an image)
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block means no rotation, as for OpenCV
        return 1


def native_channels(data: bytes, what: str = "image") -> int | None:
    """Channels ``cv::imdecode(IMREAD_UNCHANGED)`` would give for an 8-bit file: 1, 3 or None.

    None when the file is anything else (alpha, palette with transparency, 16-bit,
    an EXIF rotation that IMREAD_UNCHANGED ignores): such bytes are not stored
    unchanged in an encoded Datum (see ``datum.image_to_datum``).
    """
    im = _open(data, what)
    if _orientation(im) not in (0, 1):
        return None
    if im.mode == "L":
        return 1
    if im.mode == "RGB" or (im.mode == "P" and "transparency" not in im.info):
        return 3
    return None


def _gray_from_rgb(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """OpenCV's colour->gray for a decoder: libpng's for PNG, cvtColor's otherwise. (H, W)."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    if fmt == "PNG":
        y = (r * 9797 + g * 19234 + b * 3737) >> 15
    else:
        y = (b * 1868 + g * 9617 + r * 4899 + 8192) >> 14
    return y.astype(np.uint8)


def _as_uint8(im) -> np.ndarray | None:
    """Single-channel 16/32-bit images as uint8 (high byte of 16-bit values); else None."""
    if im.mode.startswith("I;16"):
        return (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
    if im.mode == "I":
        return (np.clip(np.asarray(im), 0, 65535) >> 8).astype(np.uint8)
    if im.mode == "F":
        return np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8)
    return None


def decode_image(data: bytes, color: bool | None = True, what: str = "image") -> np.ndarray:
    """Decode image bytes as ``cv::imdecode`` does.

    Args:
        data: the file's bytes.
        color: True -> ``IMREAD_COLOR`` (3 channels, BGR); False -> ``IMREAD_GRAYSCALE``
            (1 channel); None -> the file's own kind (1 for gray files, else 3).
        what: names the image in errors (a path, a list line or a database key).

    Returns:
        uint8 array of shape (H, W, 3) in BGR order or (H, W, 1), C-contiguous.

    Raises:
        DataError naming ``what`` when the bytes are not a decodable image.
    """
    return np.ascontiguousarray(decode_image_view(data, color, what))


def decode_image_view(data: bytes, color: bool | None = True, what: str = "image") -> np.ndarray:
    """``decode_image`` without the final copy: a read-only (H, W, C) uint8 view, any strides.

    A colour image is a channel-reversed view of the decoder's RGB pixels and a
    gray image read in colour a broadcast of one plane, so nothing is copied after
    decoding; the data layers crop, mirror and lay out channels in one pass
    (``DataTransformer``). Same pixels and errors as ``decode_image``.
    """
    _, ImageOps = _pil()
    im = _open(data, what)
    fmt = im.format or ""
    try:
        if color is None:
            color = im.mode not in _GRAY_MODES and im.mode not in ("LA", "La")
        if not color and fmt == "JPEG" and im.mode in ("RGB", "L"):
            im.draft("L", im.size)  # libjpeg's JCS_GRAYSCALE output: the luma plane
        if _orientation(im) in range(2, 9):
            im = ImageOps.exif_transpose(im)
        im.load()
        wide = _as_uint8(im)
        if color:
            if wide is not None or im.mode in ("L", "1"):
                plane = wide if wide is not None else np.asarray(im if im.mode == "L" else im.convert("L"))
                arr = np.broadcast_to(plane[:, :, None], plane.shape + (3,))
            else:
                arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))[:, :, ::-1]
        else:
            if wide is not None:
                arr = wide
            elif im.mode in ("L", "1", "LA", "La"):
                arr = np.asarray(im if im.mode == "L" else im.convert("L") if im.mode != "LA" else im.getchannel(0))
            else:
                arr = _gray_from_rgb(np.asarray(im.convert("RGB")), fmt)
            arr = arr[:, :, None]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is an undecodable image
        raise DataError(f"{what}: not a decodable image ({e})") from None
    if arr.dtype != np.uint8:  # pragma: no cover - every branch above yields uint8
        arr = arr.astype(np.uint8)
    return arr


def read_image(path, color: bool = True, height: int = 0, width: int = 0, view: bool = False) -> np.ndarray:
    """Caffe's ``ReadImageToCVMat``: decode ``path``, then resize when both height and width > 0.

    Returns (H, W, 3) BGR or (H, W, 1) uint8 (``view=True``: a read-only view, as
    ``decode_image_view``, when not resized). A missing or undecodable file is a DataError.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    img = (decode_image_view if view else decode_image)(data, color, what=str(path))
    if height > 0 and width > 0:
        img = resize_bilinear(np.ascontiguousarray(img), height, width)
    return img


# ---------------------------------------------------------------- resize ----

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _linear_taps(src: int, dst: int, clamp: bool):
    """Source indices and fixed-point weights of OpenCV's bilinear resize along one axis.

    For output index d: ``f = float32((d + 0.5)·scale − 0.5)`` with
    ``scale = 1 / (dst / src)`` in double, ``s = floor(f)``, ``f −= s``; the weights
    are ``cvRound((1 − f)·2048)`` and ``cvRound(f·2048)`` (round half to even).
    Along x OpenCV clamps ``s < 0`` and ``s ≥ src − 1`` to the edge with ``f = 0``;
    along y it keeps ``f`` and clips the two row indices instead.
    """
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:
        low, high = s < 0, s >= src - 1
        f[low | high] = 0
        s[low] = 0
        s[high] = src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(_COEF_SCALE)).astype(np.int32)
    w1 = np.rint(f * np.float32(_COEF_SCALE)).astype(np.int32)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv::resize(img, Size(width, height), INTER_LINEAR)`` for uint8 images, vectorised.

    OpenCV's 8-bit path is fixed point with half-pixel centres: each output pixel is

        D[y, x] = S[y, sx]·a0[x] + S[y, sx+1]·a1[x]                  (horizontal, weights sum to 2048)
        out     = (((D[sy]>>4)·b0 >> 16) + ((D[sy+1]>>4)·b1 >> 16) + 2) >> 2   (vertical)

    The vertical step is OpenCV's SIMD kernel (``VResizeLinearVec_32s8u``), which is
    what runs on x86 and ARM; its result equals cv2.resize bit for bit in our tests
    (OpenCV's scalar fallback, ``(D0·b0 + D1·b1 + 2^21) >> 22``, may differ by one level).
    An exact 2× reduction, which OpenCV routes to INTER_AREA, gives the same numbers.

    Args:
        img: uint8, shape (H, W) or (H, W, C).
        height, width: output size (> 0).

    Returns:
        uint8 array of shape (height, width) or (height, width, C).
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise DataError(f"resize_bilinear: expected a uint8 image, got {img.dtype}")
    if img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise DataError(f"resize_bilinear: expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    if height < 1 or width < 1:
        raise DataError(f"resize_bilinear: output size must be positive, got {height}x{width}")
    src_h, src_w = img.shape[:2]
    if (src_h, src_w) == (height, width):
        return img.copy()
    channels = img.shape[2] if img.ndim == 3 else 1
    x0, x1, a0, a1 = _linear_taps(src_w, width, clamp=True)
    y0, y1, b0, b1 = _linear_taps(src_h, height, clamp=False)
    # Rows flattened to (W·C): every step below runs along long contiguous rows.
    lane = np.arange(channels)
    ix0, ix1 = (x0[:, None] * channels + lane).ravel(), (x1[:, None] * channels + lane).ravel()
    a0, a1 = np.repeat(a0, channels), np.repeat(a1, channels)
    # Horizontal pass over only the source rows the output needs: (rows, width·C) int32.
    rows, inv = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    src = img[rows].reshape(len(rows), src_w * channels)
    d = np.multiply(np.take(src, ix0, axis=1), a0, dtype=np.int32)
    d += np.multiply(np.take(src, ix1, axis=1), a1, dtype=np.int32)
    d >>= 4
    # Vertical pass: OpenCV's 16-bit multiply-high arithmetic.
    out = np.take(d, inv[:height], axis=0)
    out *= b0[:, None]
    out >>= 16
    bottom = np.take(d, inv[height:], axis=0)
    bottom *= b1[:, None]
    bottom >>= 16
    out += bottom
    out += 2
    out >>= 2
    np.minimum(out, 255, out=out)
    return out.astype(np.uint8).reshape((height, width) + img.shape[2:])


# ---------------------------------------------------------------- encode ----


def encode_image(img: np.ndarray, ext: str) -> bytes:
    """Encode an (H, W, 3) BGR or (H, W[, 1]) gray uint8 image as ``ext`` (jpg, png, bmp, tiff, webp).

    Like ``cv::imencode('.' + ext, img)``: JPEG at quality 95, 4:2:0 chroma; the bytes
    are Pillow's, not OpenCV's, so only lossless formats round-trip pixel for pixel.
    """
    Image, _ = _pil()
    e = ext.lower().lstrip(".")
    if e not in _ENCODERS:
        raise DataError(f"cannot encode as '{ext}'; known types: {', '.join(sorted(_ENCODERS))}")
    _, fmt, options = _ENCODERS[e]
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise DataError(f"encode_image: expected a uint8 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        pil = Image.fromarray(np.ascontiguousarray(img), "L")
    elif img.ndim == 3 and img.shape[2] == 3:
        pil = Image.fromarray(np.ascontiguousarray(img[:, :, ::-1]), "RGB")
    else:
        raise DataError(f"encode_image: expected an (H, W, 3) or (H, W, 1) image, got shape {img.shape}")
    buf = io.BytesIO()
    pil.save(buf, fmt, **options)
    return buf.getvalue()
