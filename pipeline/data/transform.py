"""``transform_param``: Caffe's DataTransformer (``src/caffe/data_transformer.cpp``).

For every item of a batch, in Caffe's order:

1. ``do_mirror = mirror && Rand(2)``           (one draw, in TRAIN *and* TEST)
2. crop offsets: TRAIN ``h_off = Rand(H - crop + 1)``, ``w_off = Rand(W - crop + 1)``;
   TEST the centre ``((H - crop) / 2, (W - crop) / 2)``; no crop: ``(0, 0)``
3. for c, h, w of the output (h < crop or H, w < crop or W)::

       x   = src[c, h_off + h, w_off + w]            (uint8 pixel or float_data value)
       y   = (x - mean[c, h_off + h, w_off + w]) * scale     with mean_file
           = (x - mean_value[c]) * scale                     with mean_value
           = x * scale                                       otherwise
       out[c, h, W' - 1 - w if do_mirror else w] = y

   so the mean image is indexed at the *source* position (before crop and mirror),
   one ``mean_value`` is broadcast to every channel, and ``mean_file`` and
   ``mean_value`` are mutually exclusive. All arithmetic is float32, as Caffe's
   ``Dtype = float``, so results are bit-identical.

Random words come from a ``CaffeRNG`` (``Rand(n) = mt19937() % n``), drawn for
the whole batch at once in the per-item order above (``words_per_item`` words an
item, whatever its size, so a batch's words can be drawn before its items are
decoded and the offsets reduced later: ``decide``). The values are computed with
numpy one item at a time, straight into the batch (``transform_item``): one
ufunc pass ``out = (src - mean) [* scale]`` over the crop, with the mean image
mirrored once at creation so that a mirrored item reads it forwards; a source
view whose rows are not contiguous (a mirrored crop, the channel-reversed view
of a decoded JPEG) is first gathered into a per-thread scratch buffer, which
measured 2x faster than letting the ufunc walk reversed strides. Items are
independent and the scratch is per thread, so the data layers transform items on
several threads at once (``pipeline.data.prefetch``) with bit-identical results.
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import ConfigError, DataError, ShapeError
from ..proto import caffe_pb2
from .rng import CaffeRNG

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def load_mean_file(path, where: str = "") -> np.ndarray:
    """A mean ``.binaryproto`` as a float32 C×H×W array (a leading num of 1 is dropped)."""
    from ..formats.binary import read_blobproto
    from ..formats.blob import blobproto_to_array

    arr = np.asarray(blobproto_to_array(read_blobproto(path), what=str(path)), dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ShapeError(f"{where}mean_file {path}: expected a 1×C×H×W or C×H×W mean, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


_LEGACY = ("scale", "mean_file", "crop_size", "mirror")


def transform_options(tp: caffe_pb2.TransformationParameter, legacy=None) -> dict:
    """``transform_param`` as plain keyword arguments of ``DataTransformer.create``.

    ``legacy``: a ``data_param`` / ``image_data_param`` / ``window_data_param`` whose
    old transformation fields (scale, mean_file, crop_size, mirror) fill in what
    ``transform_param`` leaves unset (nets read from files are already upgraded).
    """
    opts = {
        "scale": tp.scale,
        "mirror": tp.mirror,
        "crop_size": tp.crop_size,
        "mean_file": tp.mean_file if tp.HasField("mean_file") else None,
        "mean_values": list(tp.mean_value),
        "force_color": tp.force_color,
        "force_gray": tp.force_gray,
    }
    if legacy is not None:
        for f in _LEGACY:
            if legacy.HasField(f) and not tp.HasField(f):
                opts[f] = getattr(legacy, f)
    return opts


class DataTransformer:
    """Scale, mean subtraction, crop and mirror of C×H×W items, exactly as Caffe.

    Args:
        scale: multiplier applied after mean subtraction (default 1).
        mirror: flip horizontally when ``Rand(2)`` is 1 (both phases).
        crop_size: square crop side (0: no crop); random in TRAIN, centred in TEST.
        mean: C×H×W mean image (``mean_file``), or None.
        mean_values: one value for all channels or one per channel.
        force_color / force_gray: how encoded items are decoded (3 / 1 channels);
            without either they keep their own channel count.
        phase: ``TRAIN`` or ``TEST``.
        seed: seed of the layer's ``CaffeRNG`` (stream 0).
        where: prefix for error messages (``"Data layer 'data': "``).

    Shape:
        item (C, H, W) -> (C, crop or H, crop or W); batch of N items -> (N, C, h, w) float32.
    """

    def __init__(
        self,
        scale=1.0,
        mirror=False,
        crop_size=0,
        mean=None,
        mean_values=(),
        force_color=False,
        force_gray=False,
        phase=TRAIN,
        seed=0,
        where="",
    ):
        self.where = where
        if mean is not None and len(mean_values):
            raise ConfigError(f"{where}Cannot specify mean_file and mean_value at the same time")
        if force_color and force_gray:
            raise ConfigError(f"{where}cannot set both force_color and force_gray")
        if crop_size < 0:
            raise ConfigError(f"{where}transform_param.crop_size={crop_size} must be >= 0")
        self.scale = np.float32(scale)
        self.mirror = bool(mirror)
        self.crop_size = int(crop_size)
        self.mean = None if mean is None else np.ascontiguousarray(mean, dtype=np.float32)
        self.mean_values = np.asarray(mean_values, dtype=np.float32).reshape(-1)
        self.force_color = bool(force_color)
        self.force_gray = bool(force_gray)
        self.phase = int(phase)
        self.rng = CaffeRNG(seed, stream=0)
        # The mean read forwards by mirrored items: mean_flip[c, y, x] = mean[c, y, W-1-x].
        self._fits = None  # (item shape, batch item shape) last accepted by check_item
        mirrored_mean = self.mean is not None and self.mirror
        self._mean_flip = np.ascontiguousarray(self.mean[:, :, ::-1]) if mirrored_mean else None

    @classmethod
    def create(cls, options: dict, phase=TRAIN, seed=0, where=""):
        """Build from ``transform_options()``; reads ``mean_file`` when one is named."""
        opts = dict(options)
        mean_file = opts.pop("mean_file", None)
        if mean_file and len(opts.get("mean_values", ())):
            raise ConfigError(f"{where}Cannot specify mean_file and mean_value at the same time")
        mean = load_mean_file(mean_file, where) if mean_file else None
        return cls(mean=mean, phase=phase, seed=seed, where=where, **opts)

    @classmethod
    def from_param(cls, tp: caffe_pb2.TransformationParameter, phase=TRAIN, seed=0, where=""):
        """Build from a ``TransformationParameter``; reads ``mean_file`` when given."""
        return cls.create(transform_options(tp), phase, seed, where)

    # ------------------------------------------------------------------ shapes
    @property
    def decode_color(self):
        """``color`` argument for decoding encoded items: True, False or None (native)."""
        if self.force_color:
            return True
        if self.force_gray:
            return False
        return None

    @property
    def needs_rand(self) -> bool:
        """Caffe's InitRand condition: mirror, or a random (TRAIN) crop."""
        return self.mirror or (self.phase == TRAIN and self.crop_size > 0)

    def infer_shape(self, item_shape, what: str = "item") -> tuple:
        """Output (C, h, w) for an item of shape (C, H, W); checks crop and mean against it."""
        c, h, w = (int(d) for d in item_shape)
        cs = self.crop_size
        if c <= 0:
            raise DataError(f"{self.where}{what} has {c} channels")
        if cs and (h < cs or w < cs):
            raise ShapeError(f"{self.where}crop_size {cs} is larger than {what} ({h}×{w})")
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise ShapeError(
                f"{self.where}mean_file has shape {self.mean.shape}, but {what} is {(c, h, w)} "
                f"(the mean is indexed before cropping, so it must match the uncropped data)"
            )
        if len(self.mean_values) not in (0, 1, c):
            raise ConfigError(
                f"{self.where}Specify either 1 mean_value or as many as channels: {c} (got {len(self.mean_values)})"
            )
        return (c, cs, cs) if cs else (c, h, w)

    # ---------------------------------------------------------------- randomness
    @property
    def words_per_item(self) -> int:
        """Random words each item consumes: 1 for mirror, 2 for a TRAIN crop (any item size)."""
        return int(self.mirror) + (2 if self.crop_size and self.phase == TRAIN else 0)

    def draw_words(self, n: int) -> list:
        """The next ``n`` items' words as n lists of ``words_per_item`` ints (for ``decide``)."""
        k = self.words_per_item
        if not k:
            return [()] * n
        flat = self.rng.words(n * k).tolist()
        return [flat[i * k : (i + 1) * k] for i in range(n)]

    def decide(self, words, height: int, width: int) -> tuple[bool, int, int]:
        """(mirror, h_off, w_off) of one item of ``height``×``width`` from its ``words``.

        The item must be at least ``crop_size`` on each side (``infer_shape`` checks).
        """
        cs = self.crop_size
        mirror = bool(self.mirror and words[0] % 2 == 1)
        if cs and self.phase == TRAIN:
            j = int(self.mirror)
            return mirror, words[j] % (height - cs + 1), words[j + 1] % (width - cs + 1)
        if cs:
            return mirror, (height - cs) // 2, (width - cs) // 2
        return mirror, 0, 0

    def draw(self, sizes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mirror flags and crop offsets for items of spatial ``sizes`` [(H, W), ...].

        Words are consumed per item in Caffe's order: mirror, then h_off, then w_off.
        """
        n = len(sizes)
        hw = np.asarray(sizes, dtype=np.int64).reshape(n, 2)
        cs = self.crop_size
        k = self.words_per_item
        words = self.rng.words(n * k).reshape(n, k).astype(np.int64) if k else np.zeros((n, 0), np.int64)
        mirror = (words[:, 0] % 2 == 1) if self.mirror else np.zeros(n, bool)
        if cs and self.phase == TRAIN:
            j = int(self.mirror)
            with np.errstate(divide="ignore"):  # an item smaller than the crop is refused by apply
                h_off = words[:, j] % np.maximum(hw[:, 0] - cs + 1, 1)
                w_off = words[:, j + 1] % np.maximum(hw[:, 1] - cs + 1, 1)
        elif cs:
            h_off, w_off = (hw[:, 0] - cs) // 2, (hw[:, 1] - cs) // 2
        else:
            h_off = w_off = np.zeros(n, np.int64)
        return mirror, h_off, w_off

    # ------------------------------------------------------------------ values
    def apply(self, items, mirror, h_off, w_off, out_shape=None, names=None) -> np.ndarray:
        """Transform C×H×W ``items`` with given flags/offsets; returns float32 (N, C, h, w).

        ``out_shape`` (C, h, w) is the batch's item shape (default: the first item's);
        an item that does not fit it raises ``DataError`` naming it (``names[i]``).
        """
        if out_shape is None:
            out_shape = self.infer_shape(items[0].shape, _name(names, 0))
        out = np.empty((len(items),) + tuple(out_shape), dtype=np.float32)
        for i, it in enumerate(items):
            self.check_item(it, out_shape, _name(names, i))
            self.apply_item(out[i], it, mirror[i], h_off[i], w_off[i])
        return out

    def check_item(self, item, out_shape, name: str = "item") -> None:
        """Refuse an item that does not fit a batch of ``out_shape`` items (C, h, w)."""
        if (item.shape, out_shape) == self._fits:
            return  # the same shapes as the last item checked (the usual case: skip the work)
        c, h, w = out_shape
        if item.ndim != 3 or item.shape[0] != c or (self.crop_size == 0 and item.shape[1:] != (h, w)):
            raise DataError(
                f"{self.where}{name} has shape {tuple(item.shape)}, but the batch's "
                f"items are {tuple(out_shape)} (Caffe sizes a batch by its first item)"
            )
        if self.crop_size:
            self.infer_shape(item.shape, name)
        self._fits = (item.shape, out_shape)

    def transform_item(self, out, item, words, name: str = "item") -> None:
        """Check ``item`` against ``out`` (C, h, w), reduce its ``words`` (``decide``) and apply."""
        self.check_item(item, out.shape, name)
        mirror, h_off, w_off = self.decide(words, item.shape[1], item.shape[2])
        self.apply_item(out, item, mirror, h_off, w_off)

    def apply_item(self, out, item, mirror, h_off, w_off) -> None:
        """Write one transformed item into ``out`` (float32 (C, h, w)); the item is already checked.

        ``out[c, y, x] = (item[c, h_off + y, w_off + x'] - mean[c, h_off + y, w_off + x']) * scale``
        with ``x' = w - 1 - x`` when mirrored, else ``x``: mirroring the source view and
        reading the pre-mirrored mean gives Caffe's values element by element.
        """
        _, h, w = out.shape
        ho, wo = int(h_off), int(w_off)
        width = item.shape[2]
        src = item[:, ho : ho + h, wo : wo + w]
        mean = None
        if mirror:
            src = src[:, :, ::-1]
            if self.mean is not None:
                mean = self._mean_flip[:, ho : ho + h, width - wo - w : width - wo]
        elif self.mean is not None:
            mean = self.mean[:, ho : ho + h, wo : wo + w]
        if src.strides[-1] != src.itemsize:
            src = _gathered(src)
        if mean is None and len(self.mean_values):
            mean = self.mean_values.reshape(-1, 1, 1)  # one value broadcasts to every channel
        if mean is not None:
            np.subtract(src, mean, out=out, dtype=np.float32)  # float32(x) - mean, as Caffe's Dtype
        else:
            np.copyto(out, src)  # uint8 or float32 -> float32, exactly
        if self.scale != 1:
            np.multiply(out, self.scale, out=out)

    def transform_batch(self, items, out_shape=None, names=None) -> np.ndarray:
        """Draw (Caffe's order) and apply: a list of C×H×W arrays -> float32 (N, C, h, w)."""
        if not len(items):
            raise DataError(f"{self.where}There is no datum to add")
        mirror, h_off, w_off = self.draw([it.shape[-2:] for it in items])
        return self.apply(items, mirror, h_off, w_off, out_shape, names)

    def transform(self, item) -> np.ndarray:
        """One C×H×W item -> float32 (C, h, w)."""
        return self.transform_batch([np.asarray(item)])[0]


def _name(names, i) -> str:
    return names[i] if names is not None else f"item {i}"


_SCRATCH = threading.local()


def _gathered(src: np.ndarray) -> np.ndarray:
    """``src`` copied into this thread's scratch buffer (C-contiguous; valid until the next call)."""
    need = src.size * src.itemsize
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.nbytes < need:
        buf = _SCRATCH.buf = np.empty(need, np.uint8)
    tmp = buf[:need].view(src.dtype).reshape(src.shape)
    np.copyto(tmp, src)
    return tmp
