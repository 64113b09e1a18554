"""Batch sources of the data layers: what to read next, and exactly where it is.

Each source produces batches for ``pipeline.data.prefetch.Prefetcher`` and reports
its position as a plain dict (``state()`` / ``set_state()``), so a snapshot can
resume reading at the very next record.

Record streams (Caffe's ``Skip()`` / ``Next()`` in data_layer.cpp and
hdf5_data_layer.cpp): a counter ``offset`` runs over every record passed, across
epochs (wrap-around restarts at the first record). With ``world_size`` training
processes, process ``rank`` keeps the records with ``offset % world_size == rank``
and skips the rest, so the processes read disjoint shares whose union is the one
sequential stream; in the TEST phase nothing is skipped (Caffe tests on rank 0
only). ``shard_info()`` finds rank and world size from torch.distributed, else
the ``RANK`` / ``WORLD_SIZE`` environment variables.

- ``DatumSource``: Data layer over an LMDB/LevelDB of Datums.
- ``ImageListSource``: ImageData over a ``path label`` list (``read_image_list``).
- ``HDF5Source``: HDF5Data over a list of .h5 files (``read_hdf5_list``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..proto import caffe_pb2
from .db import open_reader
from .prefetch import BatchBuffers, BatchPlan
from .rng import CaffeRNG

TRAIN = caffe_pb2.TRAIN


def shard_info(rank=None, world_size=None) -> tuple[int, int]:
    """(rank, world_size): given values, else torch.distributed's, else $RANK/$WORLD_SIZE, else (0, 1)."""
    if rank is None or world_size is None:
        r, w = 0, 1
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                r, w = dist.get_rank(), dist.get_world_size()
            else:
                r, w = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            raise ConfigError(
                f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} must be integers"
            ) from None
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"data sharding needs 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    return int(rank), int(world_size)


def read_image_list(path) -> list[tuple[str, int, int]]:
    """A ``path label`` list as [(path, label, line number)] (ImageData's source).

    Parsed exactly as convert_imageset parses it (``imageset.read_list``): the label
    is after the last space (paths may hold spaces) and read with ``atoi``
    (``3.7`` -> 3). Unlike Caffe, blank lines are skipped, a tab also separates the
    label, and a line without a numeric label is a DataError naming the line, where
    Caffe would silently use label 0.
    """
    from .imageset import read_list

    entries, _ = read_list(path)
    return [(e.path, int(e.label), e.line) for e in entries if e.path is not None]


def read_hdf5_list(path) -> list[str]:
    """HDF5Data's source: whitespace-separated .h5 file names (Caffe reads it with ``>>``).

    Relative names are taken from the working directory, as Caffe; when that does
    not exist but the name exists beside the list file, that one is used.
    """
    try:
        names = Path(path).read_text().split()
    except OSError as e:
        raise DataError(f"{path}: Failed to open source file ({e.strerror or e})") from None
    if not names:
        raise DataError(f"{path}: Must have at least 1 HDF5 filename listed")
    base = Path(path).parent
    return [n if os.path.isabs(n) or os.path.exists(n) or not (base / n).exists() else str(base / n) for n in names]


class _Stream:
    """The offset counter and shard rule shared by the record sources."""

    def __init__(self, rank: int, world_size: int, phase: int):
        self.rank, self.world_size, self.phase = rank, world_size, phase

    def keep(self, offset: int) -> bool:
        return self.phase != TRAIN or self.world_size == 1 or offset % self.world_size == self.rank


# --------------------------------------------------------------------------- Data
def decode_datum(value: bytes, color, what: str):
    """Datum bytes -> (C×H×W array: uint8 raw/encoded or float32 float_data, label).

    The array is a read-only view of the record's pixels where possible
    (``datum.raw_datum_view`` for raw records, else ``datum.datum_to_view``).
    ``what`` (layer, key and database) is put in front of any DataError.
    """
    from .datum import datum_to_view, parse_datum, raw_datum_view

    fast = raw_datum_view(value)
    if fast is not None:
        return fast
    try:
        datum = parse_datum(value)
        arr = datum_to_view(datum, color=color)
    except DataError as e:
        raise DataError(f"{what}: {e}") from None
    if arr.dtype != np.uint8 and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr, datum.label


class DatumSource(_Stream):
    """Batches of transformed Datums from a database (Caffe's DataLayer::load_batch).

    Args:
        path, backend: the database (``"lmdb"`` or ``"leveldb"``).
        batch_size: items per batch.
        transformer: a ``DataTransformer`` (owns the crop/mirror generator).
        labels: produce the label top.
        rand_skip: start at a random record in [0, rand_skip) (``seed``, stream 1).
        rank, world_size, phase: the shard rule (module docstring).

    State: ``{"offset": records passed, "transform_rng": generator state}``.
    """

    def __init__(
        self,
        path,
        backend,
        batch_size,
        transformer,
        labels=True,
        rand_skip=0,
        seed=0,
        rank=0,
        world_size=1,
        phase=TRAIN,
        where="",
    ):
        super().__init__(rank, world_size, phase)
        self.path, self.backend, self.batch_size = str(path), backend, int(batch_size)
        self.transformer, self.labels, self.where = transformer, labels, where
        self.offset = CaffeRNG(seed, stream=1).rand(rand_skip) if rand_skip else 0
        self._reader = None
        self._it = None
        self._it_pos = -1
        self._size = None
        self._buffers = BatchBuffers()  # batch arrays the consumer has let go of are refilled

    def _open(self):
        if self._reader is None:
            try:
                self._reader = open_reader(self.path, self.backend)
            except DataError as e:
                raise DataError(f"{self.where}{e}") from None
            self._size = len(self._reader)
            if self._size == 0:
                raise DataError(f"{self.where}database {self.path} is empty")
        return self._reader

    def __len__(self) -> int:
        self._open()
        return self._size

    def _next_record(self, pos: int):
        """(key, value) at index ``pos``, reading sequentially (a cursor, re-seeked only on jumps).

        From an LMDB the value is None: only the keys are walked here, and each item
        reads its value where it is transformed (``plan_batch``'s ``fill``).
        """
        if self._it is None or self._it_pos != pos:
            reader = self._open()
            self._it = _lmdb_keys(reader.env, pos) if reader.backend == "lmdb" else iter(reader.items(start=pos))
            self._it_pos = pos
        try:
            key, value = next(self._it)
        except StopIteration:
            raise DataError(f"{self.where}database {self.path} ended at record {pos} of {self._size}") from None
        self._it_pos += 1
        if self._it_pos == self._size:
            self._it = None
        return key, value

    def _what(self, key) -> str:
        k = key.decode("utf-8", "replace") if isinstance(key, (bytes, bytearray)) else str(key)
        return f"record '{k}' of {self.path}"

    def first_item_shape(self) -> tuple:
        """(C, H, W) of the database's first record (Caffe's DataLayerSetUp peek)."""
        key, value = next(iter(self._open().items(start=0)))
        arr, _ = decode_datum(value, self.transformer.decode_color, self.where + self._what(key))
        return tuple(arr.shape)

    def plan_batch(self):
        """Pick the batch's records and draw its random words in order; items are filled later.

        The first record is decoded here: it sizes the batch, as in Caffe's load_batch.
        Filling item i reads its value (LMDB: inside a read transaction of its own,
        straight from the memory map: a raw record's pixels are never copied before
        the transform), decodes it and transforms it into the batch.
        """
        reader = self._open()
        records = []
        while len(records) < self.batch_size:
            pos = self.offset % self._size
            key, value = self._next_record(pos)
            if self.keep(self.offset):
                records.append((key, value))
            self.offset += 1
        n = len(records)
        tf, color, env = self.transformer, self.transformer.decode_color, getattr(reader, "env", None)
        words = tf.draw_words(n)
        first_key, first_value = records[0]
        first_what = self._what(first_key)
        if first_value is None:
            with env.begin() as txn:  # a copy: item 0 is used after this transaction
                first_value = self._value(txn, first_key)
        first = decode_datum(first_value, color, self.where + first_what)
        data = self._buffers.empty((n,) + tf.infer_shape(first[0].shape, first_what), np.float32)
        labels = np.empty(n, np.float32)

        def fill(i):
            key, value = records[i]
            what = self._what(key)
            if i == 0:
                arr, labels[i] = first
            elif value is None:
                with env.begin(buffers=True) as txn:  # the view into the map is used inside only
                    arr, labels[i] = decode_datum(self._value(txn, key), color, self.where + what)
                    tf.transform_item(data[i], arr, words[i], what)
                return
            else:
                arr, labels[i] = decode_datum(value, color, self.where + what)
            tf.transform_item(data[i], arr, words[i], what)

        return BatchPlan(n, fill, (data, labels) if self.labels else (data,))

    def _value(self, txn, key):
        value = txn.get(key)
        if value is None:  # pragma: no cover - the database changed while it was read
            raise DataError(f"{self.where}{self._what(key)}: the record vanished while the database was read")
        return value

    def next_batch(self):
        return self.plan_batch().run()

    def state(self) -> dict:
        return {"offset": self.offset, "transform_rng": self.transformer.rng.get_state()}

    def set_state(self, state: dict) -> None:
        self.offset = int(state["offset"])
        self.transformer.rng.set_state(state["transform_rng"])

    def release(self) -> None:
        self._it, self._it_pos = None, -1  # drop the iterator (its transaction) first
        if self._reader is not None:
            self._reader.close()  # readers of one database share it (pipeline.data.db)
            self._reader = None


def _lmdb_keys(env, start: int):
    """(key, None) for the records of an LMDB from position ``start``, values untouched."""
    with env.begin() as txn:
        cur = txn.cursor()
        ok = cur.first()
        for _ in range(start):
            if not ok:
                break
            ok = cur.next()
        while ok:
            yield cur.key(), None
            ok = cur.next()


# ---------------------------------------------------------------------- ImageData
class ImageListSource(_Stream):
    """Batches of images from a list file (Caffe's ImageDataLayer).

    Args:
        lines: [(path, label, line number)] from ``read_image_list``.
        list_path: the list file (for messages).
        root_folder: prefix joined to every path (plain string concatenation, as Caffe).
        new_height, new_width: resize every image (both > 0) or keep sizes (both 0).
        is_color: decode in colour (3 channels, BGR) or gray (1 channel).
        shuffle: a new random order each epoch (``seed``, stream 2).
        rand_skip: start at a random line in [0, rand_skip) of the first epoch (stream 3).

    State: ``{"offset", "perm_epoch", "shuffle_rng", "transform_rng"}``, where
    ``shuffle_rng`` is the shuffle generator's state *before* it drew the order of
    epoch ``perm_epoch``, so that order is redrawn on resume.
    """

    def __init__(
        self,
        lines,
        list_path,
        batch_size,
        transformer,
        root_folder="",
        new_height=0,
        new_width=0,
        is_color=True,
        shuffle=False,
        rand_skip=0,
        seed=0,
        rank=0,
        world_size=1,
        phase=TRAIN,
        where="",
    ):
        super().__init__(rank, world_size, phase)
        self.lines, self.list_path, self.batch_size = lines, str(list_path), int(batch_size)
        self.transformer, self.root_folder = transformer, root_folder
        self.new_height, self.new_width, self.is_color = int(new_height), int(new_width), bool(is_color)
        self.shuffle, self.where = bool(shuffle), where
        self._shuffle_rng = CaffeRNG(seed, stream=2)
        self._perm_epoch, self._perm_state, self._perm = -1, None, None
        self._buffers = BatchBuffers()
        n = len(lines)
        self.offset = CaffeRNG(seed, stream=3).rand(rand_skip) if rand_skip else 0
        if self.offset >= n:
            raise ConfigError(
                f"{where}Not enough points to skip: rand_skip drew {self.offset}, the list has {n} images"
            )

    def _order(self, epoch: int):
        if not self.shuffle:
            return None
        while self._perm_epoch < epoch:  # draw each epoch's order in turn (normally one step)
            self._perm_state = self._shuffle_rng.get_state()
            self._perm = self._shuffle_rng.permutation(len(self.lines))
            self._perm_epoch += 1
        return self._perm

    def _line(self, offset: int):
        n = len(self.lines)
        perm = self._order(offset // n)
        i = offset % n
        return self.lines[int(perm[i]) if perm is not None else i]

    def read(self, line) -> np.ndarray:
        """The C×H×W uint8 image of one list entry (a read-only view when not resized)."""
        from .image import read_image

        path, _, lineno = line
        try:
            img = read_image(self.root_folder + path, self.is_color, self.new_height, self.new_width, view=True)
        except DataError as e:
            raise DataError(f"{self.where}{self.list_path}:{lineno}: Could not load {path}: {e}") from None
        return img.transpose(2, 0, 1)

    def first_item_shape(self) -> tuple:
        """(C, H, W) of the first image this source will read."""
        return tuple(self.read(self._line(self.offset)).shape)

    def plan_batch(self):
        """Pick the batch's lines and draw its random words in order; images are read later.

        The first image is read here: it sizes the batch, as in Caffe's load_batch.
        """
        lines = []
        while len(lines) < self.batch_size:
            if self.keep(self.offset):
                lines.append(self._line(self.offset))
            self.offset += 1
        n, tf = len(lines), self.transformer
        words = tf.draw_words(n)
        first = self.read(lines[0])
        data = self._buffers.empty((n,) + tf.infer_shape(first.shape, self._name(lines[0])), np.float32)
        labels = np.asarray([line[1] for line in lines], dtype=np.float32)

        def fill(i):
            tf.transform_item(data[i], first if i == 0 else self.read(lines[i]), words[i], self._name(lines[i]))

        return BatchPlan(n, fill, (data, labels))

    def _name(self, line) -> str:
        return f"{self.list_path}:{line[2]} ({line[0]})"

    def next_batch(self):
        return self.plan_batch().run()

    def state(self) -> dict:
        if self.shuffle and self._perm_epoch < 0:
            self._order(0)
        return {
            "offset": self.offset,
            "perm_epoch": self._perm_epoch,
            "shuffle_rng": self._perm_state,
            "transform_rng": self.transformer.rng.get_state(),
        }

    def set_state(self, state: dict) -> None:
        self.offset = int(state["offset"])
        self.transformer.rng.set_state(state["transform_rng"])
        self._perm_epoch, self._perm_state, self._perm = -1, None, None
        if self.shuffle and state.get("shuffle_rng") is not None:
            self._shuffle_rng.set_state(state["shuffle_rng"])
            self._perm_epoch = int(state["perm_epoch"]) - 1
            self._order(int(state["perm_epoch"]))

    def release(self) -> None:
        pass


# ----------------------------------------------------------------------- HDF5Data
def load_hdf5_tops(path, tops, where="") -> list[np.ndarray]:
    """Datasets named ``tops`` of one .h5 file as float32 arrays with equal first dims."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as e:
        raise DataError(f"{where}Failed opening HDF5 file {path} ({e})") from None
    with f:
        arrays = []
        for name in tops:
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise DataError(
                    f"{where}Failed to find HDF5 dataset '{name}' in {path} "
                    f"(datasets: {', '.join(sorted(f.keys())) or 'none'})"
                )
            try:
                arr = np.asarray(f[name][()], dtype=np.float32)
            except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:  # damaged or truncated file
                raise DataError(f"{where}{path}: cannot read dataset '{name}' (damaged or truncated HDF5 file? "
                                f"{type(e).__name__}: {e})") from None
            if arr.ndim < 1:
                raise DataError(f"{where}{path}: dataset '{name}' must have at least 1 axis")
            arrays.append(np.ascontiguousarray(arr))
    num = arrays[0].shape[0]
    for name, arr in zip(tops, arrays):
        if arr.shape[0] != num:
            raise DataError(f"{where}{path}: dataset '{name}' has {arr.shape[0]} rows, '{tops[0]}' has {num}")
    if num == 0:
        raise DataError(f"{where}{path}: datasets have no rows")
    return arrays


class HDF5Source(_Stream):
    """Rows of the datasets named by the tops, file after file (Caffe's HDF5DataLayer).

    With ``shuffle`` the file order is redrawn every pass over the files and the
    row order every time a file is entered (stream 4 and 5 of ``seed``).

    State: ``{"offset", "file_pos", "row", "file_perm", "file_rng", "row_rng"}``
    (``row_rng``: before the current file's row order was drawn).
    """

    def __init__(self, files, tops, batch_size, shuffle=False, seed=0, rank=0, world_size=1, phase=TRAIN, where=""):
        super().__init__(rank, world_size, phase)
        self.files, self.tops, self.batch_size = list(files), list(tops), int(batch_size)
        self.shuffle, self.where = bool(shuffle), where
        self._file_rng, self._row_rng = CaffeRNG(seed, stream=4), CaffeRNG(seed, stream=5)
        self.offset, self.file_pos, self.row = 0, 0, 0
        self.file_perm = (
            self._file_rng.permutation(len(self.files)).tolist() if shuffle else list(range(len(self.files)))
        )
        self._loaded = None  # (file index, arrays)
        self._enter_file()

    def _enter_file(self) -> None:
        idx = self.file_perm[self.file_pos]
        if self._loaded is None or self._loaded[0] != idx:
            self._loaded = (idx, load_hdf5_tops(self.files[idx], self.tops, self.where))
        n = self._loaded[1][0].shape[0]
        self._row_state = self._row_rng.get_state()
        self._rows = self._row_rng.permutation(n) if self.shuffle else np.arange(n)

    def top_shapes(self) -> list[tuple]:
        return [(self.batch_size,) + a.shape[1:] for a in self._loaded[1]]

    def _advance(self) -> None:
        self.row += 1
        if self.row == len(self._rows):
            self.row = 0
            if len(self.files) > 1:
                self.file_pos += 1
                if self.file_pos == len(self.files):
                    self.file_pos = 0
                    if self.shuffle:
                        self.file_perm = self._file_rng.permutation(len(self.files)).tolist()
            self._enter_file()
        self.offset += 1

    def next_batch(self):
        segments = []  # [(arrays, [row, ...])] runs of rows from one loaded file
        taken = 0
        while taken < self.batch_size:
            if self.keep(self.offset):
                arrays = self._loaded[1]
                if not segments or segments[-1][0] is not arrays:
                    segments.append((arrays, []))
                segments[-1][1].append(int(self._rows[self.row]))
                taken += 1
            self._advance()
        out = []
        for j in range(len(self.tops)):
            parts = [arrays[j][rows] for arrays, rows in segments]
            shapes = {p.shape[1:] for p in parts}
            if len(shapes) > 1:
                raise DataError(f"{self.where}dataset '{self.tops[j]}' changes shape between files: {sorted(shapes)}")
            out.append(np.concatenate(parts) if len(parts) > 1 else parts[0])
        return tuple(out)

    def state(self) -> dict:
        return {
            "offset": self.offset,
            "file_pos": self.file_pos,
            "row": self.row,
            "file_perm": list(self.file_perm),
            "file_rng": self._file_rng.get_state(),
            "row_rng": self._row_state,
        }

    def set_state(self, state: dict) -> None:
        self.offset, self.file_pos, self.row = int(state["offset"]), int(state["file_pos"]), int(state["row"])
        self.file_perm = [int(i) for i in state["file_perm"]]
        self._file_rng.set_state(state["file_rng"])
        self._row_rng.set_state(state["row_rng"])
        self._enter_file()

    def release(self) -> None:
        pass
