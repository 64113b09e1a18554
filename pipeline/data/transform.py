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
the whole batch at once in the per-item order above; the values are then computed
with numpy, one item at a time in place (each item's pass stays in cache, which
measured 4x faster than whole-batch array passes for 64 × 3×256×256 items).
"""

from __future__ import annotations

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
    def draw(self, sizes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mirror flags and crop offsets for items of spatial ``sizes`` [(H, W), ...].

        Words are consumed per item in Caffe's order: mirror, then h_off, then w_off.
        """
        n = len(sizes)
        hw = np.asarray(sizes, dtype=np.int64).reshape(n, 2)
        cs = self.crop_size
        k = int(self.mirror) + (2 if cs and self.phase == TRAIN else 0)
        words = self.rng.words(n * k).reshape(n, k).astype(np.int64) if k else np.zeros((n, 0), np.int64)
        mirror = (words[:, 0] % 2 == 1) if self.mirror else np.zeros(n, bool)
        if cs and self.phase == TRAIN:
            j = int(self.mirror)
            h_off = words[:, j] % (hw[:, 0] - cs + 1)
            w_off = words[:, j + 1] % (hw[:, 1] - cs + 1)
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
        n = len(items)
        if out_shape is None:
            out_shape = self.infer_shape(items[0].shape, _name(names, 0))
        c, h, w = out_shape
        mv = None
        if self.mean is None and len(self.mean_values):
            mv = np.broadcast_to(self.mean_values, (c,)) if len(self.mean_values) == 1 else self.mean_values
            mv = mv.reshape(c, 1, 1)
        out = np.empty((n, c, h, w), dtype=np.float32)
        # One item at a time, in place: each item's pass stays in cache. Flipping the
        # source and the mean crop before the arithmetic gives the same values as
        # Caffe's mirrored write index, element by element.
        for i, it in enumerate(items):
            if it.ndim != 3 or it.shape[0] != c or (self.crop_size == 0 and it.shape[1:] != (h, w)):
                raise DataError(
                    f"{self.where}{_name(names, i)} has shape {tuple(it.shape)}, but the batch's "
                    f"items are {out_shape} (Caffe sizes a batch by its first item)"
                )
            if self.crop_size:
                self.infer_shape(it.shape, _name(names, i))
            ho, wo = int(h_off[i]), int(w_off[i])
            src = it[:, ho : ho + h, wo : wo + w]
            mean = self.mean[:, ho : ho + h, wo : wo + w] if self.mean is not None else None
            if mirror[i]:
                src = src[:, :, ::-1]
                mean = mean[:, :, ::-1] if mean is not None else None
            o = out[i]
            o[...] = src  # uint8 or float32 -> float32, exactly
            if mean is not None:
                o -= mean
            elif mv is not None:
                o -= mv
            if self.scale != 1:
                o *= self.scale
        return out

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
