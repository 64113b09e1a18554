"""convert_imageset's parts: the list file, the per-image work (run in worker processes), HDF5 output.

List files (``tools/convert_imageset.cpp``): one image per line, ``path label``,
the label being the text after the **last** space (or tab), so paths may hold
spaces. Each line's position in the list is Caffe's ``line_id``: the database key
of the image is ``"%08d_%s" % (line_id, path)`` - after ``--shuffle``, its
position in the shuffled list. A line whose image cannot be read leaves a gap in
the key numbers, as in Caffe; so does a blank line (Caffe reads it as an image
with an empty name).

Labels: a Datum's label is an int32. Caffe reads it with ``atoi``, so ``3.7`` is
3 (same here) and a missing or non-numeric label is silently 0 (an error here,
naming the line). For ``--backend hdf5`` a line may carry several float labels
(multi-label or regression targets): the labels are the trailing numbers, the
same count on every line (the smallest count of trailing numbers over the
lines), and everything before them is the path.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datum import image_to_datum
from .db import StagedDirectory, StagedWriter
from .image import decode_image, resize_bilinear

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LEADING_INT = re.compile(r"[+-]?\d+")
_TOKEN = re.compile(r"\S+")
INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class Entry:
    """One line of a list file.

    Attributes:
        index: Caffe's ``line_id`` (position in the list, after any shuffle); the key number.
        line: 1-based line number in the file (for messages).
        path: the image path as written (None for a blank line).
        label: an int (Datum label) or a tuple of floats (HDF5 labels).
    """

    index: int
    line: int
    path: str | None
    label: object = 0

    @property
    def key(self) -> str:
        return f"{self.index:08d}_{self.path}"


def _atoi_label(text: str, where: str, notes: list) -> int:
    if not _NUMBER.fullmatch(text):
        raise DataError(f"{where}: the label '{text}' is not a number")
    m = _LEADING_INT.match(text)
    value = int(m.group()) if m else 0
    if m is None or m.end() != len(text):
        notes.append(f"{where}: label '{text}' stored as {value} (Datum labels are integers; Caffe's atoi)")
    if not INT32[0] <= value <= INT32[1]:
        raise DataError(f"{where}: the label {value} does not fit a Datum's int32 label")
    return value


def read_list(path, float_labels: bool = False) -> tuple[list[Entry], list[str]]:
    """Parse a convert_imageset list file.

    Args:
        path: the list file.
        float_labels: parse one or more float labels per line (HDF5 output)
            instead of one integer label.

    Returns:
        (entries, notes): one Entry per line (blank lines included, with
        ``path=None``), and notes worth printing (labels truncated to integers).

    Raises:
        DataError naming the file and line for a line without a label or with a
        label that is not a number, or when the list holds no image at all.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise DataError(f"{path}: cannot read the list file ({e.strerror or e})") from None
    lines = text.splitlines()
    notes: list[str] = []
    nlabels = _count_float_labels(path, lines) if float_labels else 1
    entries = []
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip()
        where = f"{path}:{n}"
        if not line.strip():
            entries.append(Entry(len(entries), n, None))
            continue
        tokens = list(_TOKEN.finditer(line))
        if len(tokens) <= nlabels:
            raise DataError(f"{where}: expected 'path label', found no label after the path in {line!r}")
        first = tokens[-nlabels]
        img = line[: first.start()].rstrip()
        if float_labels:
            label = tuple(float(t.group()) for t in tokens[-nlabels:])
        else:
            label = _atoi_label(first.group(), where, notes)
        entries.append(Entry(len(entries), n, img, label))
    if not any(e.path is not None for e in entries):
        raise DataError(f"{path}: the list holds no images")
    return entries, notes


def _count_float_labels(path, lines) -> int:
    """The number of trailing numbers every non-blank line has (at least 1), leaving a path."""
    count = None
    for n, raw in enumerate(lines, 1):
        tokens = _TOKEN.findall(raw)
        if not tokens:
            continue
        k = 0
        while k < len(tokens) - 1 and _NUMBER.fullmatch(tokens[-1 - k]):
            k += 1
        if k == 0:
            raise DataError(f"{path}:{n}: expected 'path label [label ...]', found no numeric label in {raw.strip()!r}")
        count = k if count is None else min(count, k)
    return count or 1


def shuffled(entries: list[Entry], seed: int) -> list[Entry]:
    """The entries in a seeded random order, renumbered (Caffe's ``line_id`` after ``shuffle``).

    Uses numpy's legacy ``RandomState(seed).permutation``, whose stream numpy keeps
    fixed across versions, so a list shuffles the same way everywhere.
    """
    order = np.random.RandomState(seed).permutation(len(entries))
    return [Entry(i, entries[j].line, entries[j].path, entries[j].label) for i, j in enumerate(order)]


def resolve(root: str, path: str) -> str:
    """Caffe's ``root_folder + path`` (plain concatenation); a '/' is added when ``root`` is a
    folder given without one (Caffe would read ``imagescat.jpg`` for ``images`` + ``cat.jpg``)."""
    if root and not root.endswith(("/", os.sep)) and os.path.isdir(root):
        return root + "/" + path
    return root + path


# ------------------------------------------------------------- worker side --


@dataclass(frozen=True)
class Job:
    """What each image goes through; sent once to every worker process.

    ``encoding``: '' raw pixels, 'file' keep/derive each file's own type, or a type
    ('jpg', 'png', ...). ``as_array``: return the C×H×W array (HDF5) instead of
    serialized Datum bytes.
    """

    root: str
    color: bool = True
    height: int = 0
    width: int = 0
    encoding: str = ""
    as_array: bool = False


@dataclass
class Result:
    """One image's outcome: ``payload`` (Datum bytes or array) and ``shape`` (C, H, W),
    or ``skip`` ('missing', 'unreadable', 'undecodable') and ``reason``."""

    entry: Entry
    payload: object = None
    shape: tuple = ()
    skip: str = ""
    reason: str = ""


def process(entry: Entry, job: Job) -> Result:
    """Read, decode, resize and package one list entry (Caffe's ``ReadImageToDatum``)."""
    if entry.path is None:
        return Result(entry, skip="blank")
    full = resolve(job.root, entry.path)
    try:
        with open(full, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Result(entry, skip="missing", reason=f"no such file '{full}'")
    except OSError as e:
        return Result(entry, skip="unreadable", reason=f"cannot read '{full}' ({e.strerror or e})")
    try:
        if job.as_array:
            img = decode_image(data, job.color, what=full)
            if job.height > 0 and job.width > 0:
                img = resize_bilinear(img, job.height, job.width)
            arr = np.ascontiguousarray(img.transpose(2, 0, 1))
            return Result(entry, arr, arr.shape)
        label = entry.label if isinstance(entry.label, int) else 0
        datum, shape = image_to_datum(data, label, job.color, job.height, job.width, job.encoding, what=full)
        return Result(entry, datum.SerializeToString(), shape)
    except DataError as e:
        return Result(entry, skip="undecodable", reason=str(e))


def _worker(chunks, job: Job, conn) -> None:
    """A worker process: do its share of the chunks, send each chunk's results as one message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it ends the workers)
    torch = sys.modules.get("torch")  # forked from a process that loaded torch: one thread each
    if torch is not None:
        torch.set_num_threads(1)
    try:
        for chunk in chunks:
            conn.send(("ok", [process(e, job) for e in chunk]))
    except BrokenPipeError:  # the parent stopped reading
        pass
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        import traceback

        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def process_all(entries, job: Job, jobs: int = 1, chunksize: int = 8):
    """Yield a Result per entry, in the entries' order, using ``jobs`` worker processes.

    ``jobs <= 1`` works in this process. Otherwise the entries are cut into chunks
    dealt round-robin to the workers (chunk i to worker i mod jobs); each worker
    sends a chunk's results back over its own pipe, and the chunks are read back
    in order, so the output order is the list's. Workers are forked where the
    platform allows (no re-import), else spawned. Leaving the generator early (an
    error, Ctrl-C) terminates them.

    This is leaner than ``multiprocessing.Pool``, whose helper threads and shared
    queues cost more than decoding a small image when the machine is busy.
    """
    entries = list(entries)
    if jobs <= 1 or len(entries) <= chunksize:
        for e in entries:
            yield process(e, job)
        return
    import multiprocessing as mp

    from PIL import Image

    Image.preinit()  # load Pillow's common format plugins once, before the workers fork
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
    chunks = [entries[i : i + chunksize] for i in range(0, len(entries), chunksize)]
    jobs = min(jobs, len(chunks))
    workers, conns = [], []
    try:
        for k in range(jobs):
            recv, send = ctx.Pipe(duplex=False)
            w = ctx.Process(target=_worker, args=(chunks[k::jobs], job, send), daemon=True)
            w.start()
            send.close()
            workers.append(w)
            conns.append(recv)
        for i in range(len(chunks)):
            try:
                status, payload = conns[i % jobs].recv()
            except EOFError:
                code = workers[i % jobs].exitcode
                raise DataError(f"a convert worker process died (exit code {code})") from None
            if status != "ok":
                raise RuntimeError(f"a convert worker process failed:\n{payload}")
            yield from payload
    finally:
        for c in conns:
            c.close()
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join()


# ------------------------------------------------------------- HDF5 output --

HDF5_FILE_BYTES = 1 << 29  # float32 pixels per .h5 file (Caffe's HDF5Data loads a whole file at once)
HDF5_LIST_NAME = "list.txt"


class Hdf5SetWriter(StagedWriter):
    """A folder of HDF5 files for Caffe's HDF5Data layer, plus the list file it reads.

    Layout of ``path/``::

        part-00000.h5, part-00001.h5, ...   data  float32 (N, C, H, W), pixel values 0..255
                                            label float32 (N,) for one label, (N, K) for K
        list.txt                            the .h5 files' absolute paths, one a line (bare
                                            names when the path holds a space: the list is
                                            read whitespace-separated)

    Point ``hdf5_data_param { source: "<path>/list.txt" }`` at it. Datasets are
    chunked one image per chunk and gzip-compressed (readable by any HDF5 build,
    Caffe's included). A file is closed after ``file_bytes`` of pixels. The folder
    is built under a temporary name and renamed at ``close()``, like the databases.
    """

    def __init__(self, path, overwrite: bool = False, file_bytes: int = HDF5_FILE_BYTES, buffer: int = 64):
        import h5py

        self._h5py = h5py
        self.path = str(path)
        self.final = Path(os.path.abspath(path))
        self._stage = StagedDirectory(path, overwrite)
        self.file_bytes, self.buffer = int(file_bytes), int(buffer)
        self.files: list[str] = []
        self._file = None
        self._in_file = 0
        self._pending: list[tuple[np.ndarray, tuple]] = []
        self._shape = None
        self._nlabels = None
        self.count = 0
        self.note = ""
        self._open = True

    def put(self, arr: np.ndarray, labels) -> None:
        """Add one C×H×W image (any shape, the same for all) and its labels (a tuple of floats)."""
        labels = tuple(float(x) for x in np.atleast_1d(labels))
        if self._shape is None:
            self._shape, self._nlabels = tuple(arr.shape), len(labels)
        elif tuple(arr.shape) != self._shape:
            raise DataError(f"{self.path}: image of shape {tuple(arr.shape)} after images of shape {self._shape}")
        elif len(labels) != self._nlabels:
            raise DataError(f"{self.path}: {len(labels)} labels after items with {self._nlabels}")
        self._pending.append((arr, labels))
        self.count += 1
        if len(self._pending) >= self.buffer:
            self._flush()

    def _per_file(self) -> int:
        return max(1, self.file_bytes // (4 * int(np.prod(self._shape))))

    def _new_file(self):
        name = f"part-{len(self.files):05d}.h5"
        self._file = self._h5py.File(self._stage.path / name, "w")
        self.files.append(name)
        self._in_file = 0
        shape = self._shape
        self._file.create_dataset(
            "data",
            shape=(0,) + shape,
            maxshape=(None,) + shape,
            dtype="f4",
            chunks=(1,) + shape,
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        lshape = () if self._nlabels == 1 else (self._nlabels,)
        self._file.create_dataset(
            "label", shape=(0,) + lshape, maxshape=(None,) + lshape, dtype="f4", chunks=(4096,) + lshape
        )

    def _flush(self):
        while self._pending:
            if self._file is None or self._in_file >= self._per_file():
                self._close_file()
                self._new_file()
            take = self._pending[: self._per_file() - self._in_file]
            self._pending = self._pending[len(take) :]
            data = np.stack([a for a, _ in take]).astype(np.float32)
            labels = np.asarray([lab for _, lab in take], np.float32)
            if self._nlabels == 1:
                labels = labels[:, 0]
            n0 = self._in_file
            for name, values in (("data", data), ("label", labels)):
                ds = self._file[name]
                ds.resize(n0 + len(take), axis=0)
                ds[n0:] = values
            self._in_file += len(take)

    def _close_file(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _finish(self) -> None:
        """close(): write what is left and the list file (then the folder is renamed into place)."""
        self._flush()
        self._close_file()
        names = [str(self.final / name) for name in self.files]
        if any(ch.isspace() for ch in str(self.final)):
            # HDF5Data reads the list with `>>` (whitespace-separated): bare names instead,
            # which our HDF5Data finds beside the list file (Caffe: from its working directory).
            names = list(self.files)
            self.note = f"{self.path} has a space in its absolute path; {HDF5_LIST_NAME} lists bare file names"
        listing = "".join(f"{n}\n" for n in names)
        (self._stage.path / HDF5_LIST_NAME).write_text(listing)

    def _release(self) -> None:  # abort()
        self._close_file()
