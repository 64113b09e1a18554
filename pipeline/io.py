"""pycaffe's ``caffe.io``: images in, preprocessing for a net, Datum and BlobProto conversion.

``import pipeline as caffe; caffe.io.load_image(path)`` behaves like pycaffe's
(``python/caffe/io.py``):

- ``load_image(filename, color=True)``: H×W×3 **RGB** float32 in [0, 1] (or H×W×1
  gray), as skimage reads it: alpha dropped, a gray file tiled to 3 channels when
  ``color``; gray from colour is skimage's ``0.2125 R + 0.7154 G + 0.0721 B``.
- ``resize_image(im, new_dims, interp_order=1)``: skimage's ``resize(mode='constant')``
  for 1 or 3 channels (the image is scaled to [0, 1] first, as pycaffe does),
  ``scipy.ndimage.zoom`` otherwise.
- ``oversample(images, crop_dims)``: 4 corners + centre, and their mirrors (10 crops per image).
- ``Transformer(inputs)``: ``preprocess`` = resize → transpose → channel_swap →
  ×raw_scale → −mean → ×input_scale; ``deprocess`` undoes it.
- ``array_to_datum`` / ``datum_to_array``, ``array_to_blobproto`` / ``blobproto_to_array``,
  ``arraylist_to_blobprotovector_str`` / ``blobprotovector_str_to_arraylist``.

Differences: images are read with Pillow (skimage is not a dependency), and
resizing never anti-aliases (skimage >= 0.15 smooths before shrinking by default;
the skimage of Caffe's time did not). ``datum_to_array`` returns float32 for
``float_data`` records (pycaffe float64; same values). Errors are the package's
typed errors (ConfigError, ShapeError, DataError) rather than bare Exception /
ValueError, with pycaffe's messages.
"""

from __future__ import annotations

import numpy as np

from .data.datum import array_to_datum, datum_to_array
from .errors import ConfigError, DataError, ShapeError
from .formats.blob import array_to_blobproto, blobproto_to_array
from .proto import caffe_pb2

__all__ = [
    "Transformer",
    "array_to_blobproto",
    "array_to_datum",
    "arraylist_to_blobprotovector_str",
    "blobproto_to_array",
    "blobprotovector_str_to_arraylist",
    "datum_to_array",
    "load_image",
    "oversample",
    "resize_image",
]

_SKIMAGE_GRAY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray weights


# ---------------------------------------------------------------- blobs
def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    """A list of arrays as a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data: bytes) -> list:
    """A serialized BlobProtoVector as a list of arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(blob) for blob in vec.blobs]


# ---------------------------------------------------------------- images
def _float_image(arr: np.ndarray) -> np.ndarray:
    """skimage's ``img_as_float``: integers divided by their type's maximum (float64)."""
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / np.iinfo(arr.dtype).max
    return arr.astype(np.float64)


def load_image(filename, color: bool = True) -> np.ndarray:
    """Load an image as pycaffe does: float32 in [0, 1], RGB (H, W, 3) or gray (H, W, 1).

    Args:
        filename: image file.
        color: True for 3 channels (a gray file is repeated), False for 1 (colour files
            are converted with skimage's luminance weights).
    """
    from PIL import Image

    try:
        im = Image.open(filename)
        im.load()
    except FileNotFoundError:
        raise DataError(f"{filename}: no such image file") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise DataError(f"{filename}: not a readable image ({e})") from None
    if im.mode in ("1", "L", "I;16", "I;16L", "I;16B", "I", "F"):
        arr = np.asarray(im.convert("L") if im.mode == "1" else im)
    elif im.mode in ("LA", "La"):
        arr = np.asarray(im.getchannel(0))
    elif im.mode in ("RGBA", "RGBa", "P", "PA"):
        arr = np.asarray(im.convert("RGBA"))[:, :, :3]
    else:
        arr = np.asarray(im.convert("RGB"))
    img = _float_image(arr)
    if img.ndim == 3 and not color:
        img = img @ _SKIMAGE_GRAY
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return img


def _skimage_resize(im: np.ndarray, new_dims, order: int) -> np.ndarray:
    """skimage ``resize(im, new_dims, order, mode='constant', cval=0)`` without anti-aliasing.

    Output pixel centres map to input coordinates ``(i + 0.5)·(in / out) − 0.5``;
    samples beyond the edge blend with 0.
    """
    from scipy import ndimage

    zoom = (new_dims[0] / im.shape[0], new_dims[1] / im.shape[1]) + (1,) * (im.ndim - 2)
    out = ndimage.zoom(im.astype(np.float64), zoom, order=order, mode="grid-constant", cval=0.0, grid_mode=True)
    return np.clip(out, im.min(), im.max()) if order > 0 else out


def resize_image(im: np.ndarray, new_dims, interp_order: int = 1) -> np.ndarray:
    """Resize an (H, W, K) image to ``new_dims`` (height, width); returns float32 (h, w, K).

    For K of 1 or 3 the image is scaled to [0, 1], resized as skimage's
    ``resize(mode='constant')`` and scaled back (a constant image stays constant);
    other K use ``scipy.ndimage.zoom``, as pycaffe does.
    """
    im = np.asarray(im)
    new_dims = tuple(int(d) for d in new_dims)
    if im.shape[-1] in (1, 3):
        im_min, im_max = im.min(), im.max()
        if im_max > im_min:
            im_std = (im - im_min) / (im_max - im_min)
            resized = _skimage_resize(im_std, new_dims, interp_order) * (im_max - im_min) + im_min
        else:
            ret = np.empty((new_dims[0], new_dims[1], im.shape[-1]), dtype=np.float32)
            ret.fill(im_min)
            return ret
    else:
        from scipy.ndimage import zoom

        scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
        resized = zoom(im, scale + (1,), order=interp_order)
    return resized.astype(np.float32)


def oversample(images, crop_dims) -> np.ndarray:
    """Ten crops per (H, W, K) image: 4 corners and the centre, then their mirrors.

    Returns float32 (10·len(images), crop_h, crop_w, K), crops of image i at 10i..10i+9.
    """
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = np.empty((5, 4), dtype=int)
    curr = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[curr] = (i, j, i + crop_dims[0], j + crop_dims[1])
            curr += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0] : crop[2], crop[1] : crop[3], :]
            ix += 1
        crops[ix - 5 : ix] = crops[ix - 5 : ix, :, ::-1, :]  # the last five are mirrored
    return crops


# ---------------------------------------------------------------- Transformer
class Transformer:
    """Turn images into a net's input blobs and back (pycaffe's ``caffe.io.Transformer``).

    Args:
        inputs: {input name: blob shape (N, C, H, W)}, e.g. ``{'data': net.blobs['data'].data.shape}``.

    Example (a BGR, 0..255 Caffe model)::

        t = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
        t.set_transpose('data', (2, 0, 1))       # H×W×C -> C×H×W
        t.set_channel_swap('data', (2, 1, 0))    # RGB -> BGR
        t.set_raw_scale('data', 255)             # [0, 1] -> [0, 255]
        t.set_mean('data', mean_bgr)             # (C,) or (C, H, W)
        net.blobs['data'].data[...] = t.preprocess('data', caffe.io.load_image(path))
    """

    def __init__(self, inputs):
        self.inputs = {k: tuple(int(d) for d in v) for k, v in dict(inputs).items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def __check_input(self, in_):
        if in_ not in self.inputs:
            raise ConfigError(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_, data) -> np.ndarray:
        """resize to the input's H×W → transpose → channel_swap → ×raw_scale → −mean → ×input_scale (float32)."""
        self.__check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[channel_swap, :, :]
        if np.may_share_memory(caffe_in, data):
            caffe_in = caffe_in.copy()  # never scale the caller's array in place
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data) -> np.ndarray:
        """Invert ``preprocess`` (except the resize): a net's C×H×W input back to H×W×C."""
        self.__check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Axis order applied to the input, e.g. (2, 0, 1) for H×W×C images."""
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ShapeError("Transpose order needs to have the same number of dimensions as the input.")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """Channel order after transposing, e.g. (2, 1, 0) for RGB -> BGR."""
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ShapeError("Channel swap needs to have the same number of dimensions as the input channels.")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiplier before mean subtraction (255 turns [0, 1] images into [0, 255])."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: (C,) per channel, or an elementwise (C, H, W) / (H, W) mean."""
        self.__check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ShapeError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ShapeError("Mean shape invalid")
            if ms != self.inputs[in_][1:]:
                raise ShapeError(f"Mean shape incompatible with input shape ({ms} vs {self.inputs[in_][1:]}).")
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiplier after mean subtraction (e.g. 0.017 for std normalisation)."""
        self.__check_input(in_)
        self.input_scale[in_] = scale
