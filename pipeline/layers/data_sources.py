"""Data source layers that read files: Data, ImageData, HDF5Data, WindowData.

A source layer has no bottoms; its ``forward()`` returns CPU tensors (the net
moves them to its device). ``reshape`` gives the exact top shapes at build time
from the first record, image or file, as Caffe's ``DataLayerSetUp`` does, so a
bad source or transform fails when the net is built.

Reading, decoding and transforming run ahead on a background thread
(``data_param.prefetch`` batches, default 4) for Data, ImageData and WindowData;
HDF5Data reads from memory on the caller's thread, as Caffe's does.

Data and ImageData decode and transform a batch's items on ``workers`` threads
(the ``workers`` keyword or attribute; default ``$PIPELINE_DATA_WORKERS``, else
1): records, random words and positions are fixed in order first, so the batches
are bit for bit those of one worker, and ``get_position``/``set_position`` stay
exact (``pipeline.data.prefetch``). Beyond Caffe, which decodes on one thread.

Every source layer has ``get_position() -> dict`` and ``set_position(dict)``: the
position of the next batch the net will consume (record offset, shuffle and
transform generator states; plain JSON values), so a snapshot resumes reading
exactly where it stopped, prefetched batches included.

Randomness (crops, mirrors, shuffles, ``rand_skip``, window sampling) comes from
generators seeded at layer creation from torch's global generator, so
``caffe.set_random_seed(s)`` makes runs repeatable. Several training processes
read disjoint shares of a Data / ImageData / HDF5Data source (see
``pipeline.data.sources``); ``rank`` / ``world_size`` come from torch.distributed
or ``$RANK`` / ``$WORLD_SIZE``.

Differences from Caffe, on purpose:

- ``Data`` without an explicit ``backend`` opens an LMDB when the source is one
  (Caffe's default LEVELDB would fail on it).
- ``ImageData`` shards across processes like ``Data`` (Caffe's every solver reads
  the whole list) and refuses list lines without an integer label.
- ``WindowData`` takes ``scale`` from ``transform_param`` (where the upgrade moves
  ``window_data_param.scale``) when ``window_data_param.scale`` is not set.

MemoryData and HDF5Output live in ``data_arrays.py``.
"""

from __future__ import annotations

import os

import torch

from ..data.prefetch import Prefetcher
from ..data.rng import layer_seed
from ..data.transform import TRAIN, DataTransformer, transform_options
from ..errors import ConfigError, DataError
from ..proto import caffe_pb2
from ..registry import LAYERS
from .base import Layer

_DB = caffe_pb2.DataParameter


WORKERS_ENV = "PIPELINE_DATA_WORKERS"


def default_workers() -> int:
    """Decode/transform threads of a data layer: ``$PIPELINE_DATA_WORKERS``, else 1."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if not text:
        return 1
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{WORKERS_ENV}={text!r}: expected a positive number of data worker threads")
    return n


class _SourceLayer(Layer):
    """Shared plumbing: a batch source behind a ``Prefetcher``, positions, tops."""

    exact_bottoms = 0

    def __init__(self, name="", phase=TRAIN, seed=None, prefetch=4, rank=None, world_size=None, workers=None):
        super().__init__(name, phase)
        self.seed = layer_seed() if seed is None else int(seed)
        self.prefetch = int(prefetch)
        self.rank, self.world_size = rank, world_size
        self._feeder = None
        self._top_shapes = None
        self._workers = None
        self.workers = workers

    @property
    def workers(self) -> int:
        """Threads that decode and transform a batch's items (same batches for any number).

        Set it any time (None: ``$PIPELINE_DATA_WORKERS``, else 1); batches already
        prefetched are remade with the new count from the consumed position.
        """
        return self._workers

    @workers.setter
    def workers(self, value) -> None:
        if value is None:
            try:
                n = default_workers()
            except ConfigError as e:
                raise ConfigError(f"{self.where}{e}") from None
        else:
            try:
                n = int(value)
            except (TypeError, ValueError):
                n = 0
            if n < 1 or n != value:
                raise ConfigError(f"{self.where}workers={value!r}: expected a positive integer")
        self._workers = n
        if self.__dict__.get("_feeder") is not None:
            self._feeder.set_workers(n)

    @property
    def where(self) -> str:
        return f"{self.type} layer '{self.name}': "

    def _make_source(self):  # pragma: no cover - abstract
        """Return (batch source, top shapes)."""
        raise NotImplementedError

    def _shard(self):
        from ..data.sources import shard_info

        try:
            return shard_info(self.rank, self.world_size)
        except ConfigError as e:
            raise ConfigError(f"{self.where}{e}") from None

    def _positive(self, value, field):
        if value <= 0:
            raise ConfigError(f"{self.where}{field}={value}: a positive batch size is required")

    def setup(self, bottom_shapes):
        self.close()
        source, shapes = self._make_source()
        self._top_shapes = [tuple(int(d) for d in s) for s in shapes]
        self._feeder = Prefetcher(source, self.prefetch, name=f"{self.type}:{self.name}", workers=self.workers)
        resume = self.__dict__.pop("_resume", None)
        if resume is not None:  # the layer was copied or unpickled: continue where the original was
            self._feeder.set_position(resume)

    def __getstate__(self):
        """Copies and pickles carry the read position, not the thread (rebuilt on first use)."""
        state = self.__dict__.copy()
        if self._feeder is not None:
            state["_resume"] = self._feeder.position()
        state["_feeder"] = None
        return state

    def reshape(self, bottom_shapes):
        if self._top_shapes is None:
            self.setup(bottom_shapes)
        return self._top_shapes[: max(self.num_tops, 1)]

    def forward(self):
        if self._feeder is None:
            self.setup([])
        batch = self._feeder.next()
        outs = tuple(torch.from_numpy(b) for b in batch[: max(self.num_tops, 1)])
        return outs[0] if len(outs) == 1 else outs

    # -------------------------------------------------------------- positions
    def get_position(self) -> dict:
        """Where the next batch the net consumes starts (JSON data)."""
        if self._feeder is None:
            self.setup([])
        return {"type": self.type, **self._feeder.position()}

    def set_position(self, position: dict) -> None:
        """Resume at ``position`` (from ``get_position``); prefetched batches are dropped."""
        if position.get("type", self.type) != self.type:
            raise ConfigError(f"{self.where}cannot take the position of a {position.get('type')} layer")
        if self._feeder is None:
            self.setup([])
        try:
            self._feeder.set_position({k: v for k, v in position.items() if k != "type"})
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{self.where}not a position of this layer ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        """Stop the prefetch thread (it also stops when the layer is collected)."""
        if self._feeder is not None:
            self._feeder.stop()


@LAYERS.register()
class Data(_SourceLayer):
    """Datums from an LMDB or LevelDB (raw uint8, float_data or encoded images).

    Args:
        source: database path. backend: "lmdb", "leveldb", or None (Caffe's default
            LevelDB, unless ``source`` is an LMDB).
        batch_size: items per batch. rand_skip: start at a random record in [0, rand_skip).
        transform: ``transform_options(transform_param)``.
        prefetch: batches read ahead (0: none).
        seed, rank, world_size: generators and sharding (defaults: torch's seed, the environment).
        workers: threads decoding and transforming items (default ``$PIPELINE_DATA_WORKERS``
            or 1); the batches do not depend on it.

    Shape: tops data (N, C, crop or H, crop or W) float32 and optional label (N,) float32;
    the records pass in key order and wrap around at the end.
    """

    type = "Data"
    min_tops = 1
    max_tops = 2

    def __init__(
        self,
        source="",
        batch_size=0,
        backend=None,
        rand_skip=0,
        transform=None,
        prefetch=4,
        seed=None,
        rank=None,
        world_size=None,
        name="",
        phase=TRAIN,
        workers=None,
    ):
        super().__init__(name, phase, seed, prefetch, rank, world_size, workers)
        self.source, self.batch_size, self.backend = str(source), int(batch_size), backend
        self.rand_skip, self.transform = int(rand_skip), dict(transform or {})

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        dp = param.data_param
        backend = None if not dp.HasField("backend") else ("lmdb" if dp.backend == _DB.LMDB else "leveldb")
        return cls(
            dp.source,
            dp.batch_size,
            backend,
            dp.rand_skip,
            transform_options(param.transform_param, dp),
            dp.prefetch,
            name=param.name,
            phase=phase,
        )

    def _make_source(self):
        from ..data.sources import DatumSource

        if not self.source:
            raise ConfigError(f"{self.where}data_param.source is not set")
        self._positive(self.batch_size, "data_param.batch_size")
        backend = self.backend
        if backend is None:
            backend = "lmdb" if os.path.exists(os.path.join(self.source, "data.mdb")) else "leveldb"
        rank, world = self._shard()
        transformer = DataTransformer.create(self.transform, self.phase, self.seed, self.where)
        src = DatumSource(
            self.source,
            backend,
            self.batch_size,
            transformer,
            self.num_tops > 1,
            self.rand_skip,
            self.seed,
            rank,
            world,
            self.phase,
            self.where,
        )
        try:
            shape = transformer.infer_shape(src.first_item_shape(), f"the first record of {self.source}")
        finally:
            src.release()  # the prefetch thread opens its own reader
        return src, [(self.batch_size,) + shape, (self.batch_size,)]


@LAYERS.register()
class ImageData(_SourceLayer):
    """Images named in a ``path label`` list file, decoded as OpenCV would.

    Args:
        source: the list file. root_folder: prefix of every path.
        batch_size, rand_skip, shuffle (a new order every epoch).
        new_height, new_width: resize (bilinear) to this size when both > 0.
        is_color: 3-channel BGR (default) or 1-channel gray.
        transform, prefetch, seed, rank, world_size, workers: as ``Data``.

    Shape: data (N, C, crop or H, crop or W) float32, label (N,) float32.
    """

    type = "ImageData"
    exact_tops = 2

    def __init__(
        self,
        source="",
        batch_size=1,
        root_folder="",
        new_height=0,
        new_width=0,
        is_color=True,
        shuffle=False,
        rand_skip=0,
        transform=None,
        prefetch=4,
        seed=None,
        rank=None,
        world_size=None,
        name="",
        phase=TRAIN,
        workers=None,
    ):
        super().__init__(name, phase, seed, prefetch, rank, world_size, workers)
        self.source, self.batch_size, self.root_folder = str(source), int(batch_size), root_folder
        self.new_height, self.new_width, self.is_color = int(new_height), int(new_width), bool(is_color)
        self.shuffle, self.rand_skip, self.transform = bool(shuffle), int(rand_skip), dict(transform or {})

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.image_data_param
        return cls(
            p.source,
            p.batch_size,
            p.root_folder,
            p.new_height,
            p.new_width,
            p.is_color,
            p.shuffle,
            p.rand_skip,
            transform_options(param.transform_param, p),
            param.data_param.prefetch,
            name=param.name,
            phase=phase,
        )

    def _make_source(self):
        from ..data.sources import ImageListSource, read_image_list

        if not self.source:
            raise ConfigError(f"{self.where}image_data_param.source is not set")
        if (self.new_height > 0) != (self.new_width > 0):
            raise ConfigError(
                f"{self.where}new_height and new_width must be set together "
                f"(got {self.new_height} and {self.new_width})"
            )
        self._positive(self.batch_size, "image_data_param.batch_size")
        rank, world = self._shard()
        transformer = DataTransformer.create(self.transform, self.phase, self.seed, self.where)
        try:
            lines = read_image_list(self.source)
        except DataError as e:
            raise DataError(f"{self.where}{e}") from None
        src = ImageListSource(
            lines,
            self.source,
            self.batch_size,
            transformer,
            self.root_folder,
            self.new_height,
            self.new_width,
            self.is_color,
            self.shuffle,
            self.rand_skip,
            self.seed,
            rank,
            world,
            self.phase,
            self.where,
        )
        shape = transformer.infer_shape(src.first_item_shape(), f"the first image of {self.source}")
        return src, [(self.batch_size,) + shape, (self.batch_size,)]


@LAYERS.register()
class HDF5Data(_SourceLayer):
    """Rows of HDF5 datasets named by the tops, from the .h5 files listed in ``source``.

    Any float or integer datasets (multi-dimensional float labels included) are
    read whole into memory as float32; no transformation is applied (Caffe
    refuses ``transform_param`` here). Files and rows pass in order, or shuffled
    with ``shuffle``, and wrap around.

    Shape: top i is (batch_size, *dataset_i.shape[1:]).
    """

    type = "HDF5Data"
    min_tops = 1

    def __init__(
        self,
        source="",
        batch_size=0,
        shuffle=False,
        tops=("data",),
        prefetch=0,
        seed=None,
        rank=None,
        world_size=None,
        name="",
        phase=TRAIN,
    ):
        super().__init__(name, phase, seed, prefetch, rank, world_size)
        self.source, self.batch_size, self.shuffle, self.tops = str(source), int(batch_size), bool(shuffle), list(tops)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        if param.HasField("transform_param"):
            raise ConfigError(
                f"HDF5Data layer '{param.name}': HDF5Data does not transform data (remove transform_param)"
            )
        p = param.hdf5_data_param
        return cls(p.source, p.batch_size, p.shuffle, list(param.top) or ["data"], name=param.name, phase=phase)

    def _make_source(self):
        from ..data.sources import HDF5Source, read_hdf5_list

        if not self.source:
            raise ConfigError(f"{self.where}hdf5_data_param.source is not set")
        self._positive(self.batch_size, "hdf5_data_param.batch_size")
        rank, world = self._shard()
        try:
            files = read_hdf5_list(self.source)
        except DataError as e:
            raise DataError(f"{self.where}{e}") from None
        tops = self.tops[: self.num_tops] if self.num_tops else self.tops
        src = HDF5Source(files, tops, self.batch_size, self.shuffle, self.seed, rank, world, self.phase, self.where)
        return src, src.top_shapes()


@LAYERS.register()
class WindowData(_SourceLayer):
    """R-CNN training windows: fg/bg windows sampled from a window file, warped to crop_size.

    See ``pipeline.data.windows`` for the file format and Caffe's sampling and warp.
    ``transform_param`` gives crop_size (required), mirror, mean_file / mean_value and scale.

    Shape: data (N, 3, crop, crop) float32, label (N,) float32.
    """

    type = "WindowData"
    exact_tops = 2

    def __init__(
        self,
        source="",
        batch_size=0,
        fg_threshold=0.5,
        bg_threshold=0.5,
        fg_fraction=0.25,
        context_pad=0,
        crop_mode="warp",
        cache_images=False,
        root_folder="",
        transform=None,
        prefetch=4,
        seed=None,
        name="",
        phase=TRAIN,
    ):
        super().__init__(name, phase, seed, prefetch)
        self.source, self.batch_size, self.root_folder = str(source), int(batch_size), root_folder
        self.fg_threshold, self.bg_threshold, self.fg_fraction = fg_threshold, bg_threshold, fg_fraction
        self.context_pad, self.crop_mode, self.cache_images = int(context_pad), crop_mode, bool(cache_images)
        self.transform = dict(transform or {})

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.window_data_param
        return cls(
            p.source,
            p.batch_size,
            p.fg_threshold,
            p.bg_threshold,
            p.fg_fraction,
            p.context_pad,
            p.crop_mode,
            p.cache_images,
            p.root_folder,
            transform_options(param.transform_param, p),
            param.data_param.prefetch,
            name=param.name,
            phase=phase,
        )

    def _make_source(self):
        from ..data.transform import load_mean_file
        from ..data.windows import WindowSource, read_window_file

        if not self.source:
            raise ConfigError(f"{self.where}window_data_param.source is not set")
        self._positive(self.batch_size, "window_data_param.batch_size")
        t = self.transform
        mean = load_mean_file(t["mean_file"], self.where) if t.get("mean_file") else None
        try:
            images, fg, bg = read_window_file(self.source, self.root_folder, self.fg_threshold, self.bg_threshold)
        except DataError as e:
            raise DataError(f"{self.where}{e}") from None
        src = WindowSource(
            images,
            fg,
            bg,
            self.batch_size,
            t.get("crop_size", 0),
            t.get("mirror", False),
            t.get("scale", 1.0),
            mean,
            t.get("mean_values", ()),
            self.fg_fraction,
            self.context_pad,
            self.crop_mode,
            self.cache_images,
            self.seed,
            self.where,
        )
        return src, src.top_shapes()
