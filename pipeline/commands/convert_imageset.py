"""convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME — images to a database of Datums.

Caffe's ``tools/convert_imageset.cpp``, with its flags::

    --gray              decode as gray (1 channel); colour images are BGR otherwise
    --shuffle           shuffle the list first (seeded: SHUFFLE_SEED below)
    --backend           lmdb (default) | leveldb (needs plyvel) | hdf5 (our extension)
    --resize_width W --resize_height H    bilinear resize (cv::resize), both or neither
    --check_size        stop at the first image whose size differs from the first one's
    --encoded           store the encoded image (the file's bytes when nothing changes)
    --encode_type T     re-encode as T (png, jpg, ...); implies --encoded
    --jobs N            worker processes (our extension; default: every core)

Records: key ``%08d_<path>`` (the line's position in the list), value a Datum with
uint8 C×H×W pixels (BGR) or an encoded image, committed every 1000 records.
Decoding and resizing run in ``--jobs`` processes; records are written in list
order. The database is written under a temporary name and renamed when complete;
an existing DB_NAME is refused.

Where we differ from Caffe, on purpose:

- ``--shuffle`` is reproducible: Caffe shuffles with an unseeded RNG; we use
  ``numpy.random.RandomState(1701).permutation``.
- A line without a label, or with a non-numeric one, is an error naming the line
  (Caffe stores label 0). A missing or undecodable image is skipped with a warning
  naming the line, as Caffe, and counted in the summary.
- ``--check_size`` compares C×H×W, so it also works with ``--encoded`` (Caffe
  compares the encoded byte counts). The failure removes the unfinished database.
- A run in which no image could be read writes nothing and fails.
- Only one of ``--resize_width`` / ``--resize_height`` is an error (Caffe ignores it).
- ``--encoded`` without ``--encode_type`` keeps each file's *real* type (from its
  bytes), where Caffe trusts the file name's extension.
- ``ROOTFOLDER`` without a trailing '/' still works when it is a folder.
- ``--backend hdf5`` writes ``DB_NAME/part-*.h5`` and ``DB_NAME/list.txt`` for the
  HDF5Data layer (float32 pixels, one or more float labels per line).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from contextlib import closing

from ..data import imageset
from ..data.db import open_writer
from ..data.image import canonical_type
from ..errors import DataError
from .flags import Parser, gflag_bool, normalize_flags
from .progress import Progress

PROG = "convert_imageset"
SHUFFLE_SEED = 1701  # --shuffle's seed (Caffe's shuffle is unseeded)
BOOL_FLAGS = ("gray", "shuffle", "check_size", "encoded")


def gflags_booleans(argv, names):
    """gflags' boolean spellings for argparse store_true flags: ``--x=true|false``, ``--nox``."""
    out = []
    for tok in normalize_flags(argv):
        name, eq, value = tok[2:].partition("=") if tok.startswith("--") else ("", "", "")
        if name in names and eq:
            if gflag_bool(value):
                out.append(f"--{name}")
        elif name.startswith("no") and name[2:] in names and not eq:
            continue
        else:
            out.append(tok)
    return out


def _parser() -> Parser:
    p = Parser(
        prog=PROG,
        description="Convert a set of images to the lmdb/leveldb format used as input for Caffe "
        "(or to HDF5 files for HDF5Data).",
    )
    p.add_argument("root", metavar="ROOTFOLDER/", help="folder the list's paths are relative to")
    p.add_argument("listfile", metavar="LISTFILE", help="one 'path label' per line")
    p.add_argument("db", metavar="DB_NAME", help="the database to create")
    p.add_argument("--gray", action="store_true", help="When this option is on, treat images as grayscale ones")
    p.add_argument("--shuffle", action="store_true", help="Randomly shuffle the order of images and their labels")
    p.add_argument("--backend", default="lmdb", help="The backend {lmdb, leveldb, hdf5} for storing the result")
    p.add_argument("--resize_width", type=int, default=0, help="Width images are resized to")
    p.add_argument("--resize_height", type=int, default=0, help="Height images are resized to")
    p.add_argument(
        "--check_size", action="store_true", help="When this option is on, check that all the datum have the same size"
    )
    p.add_argument(
        "--encoded", action="store_true", help="When this option is on, the encoded image will be save in datum"
    )
    p.add_argument(
        "--encode_type", default="", help="Optional: What type should we encode the image as ('png','jpg',...)."
    )
    p.add_argument("--jobs", type=int, default=0, help="Optional: worker processes (default: all cores)")
    return p


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _open_output(a, backend):
    if backend == "hdf5":
        return imageset.Hdf5SetWriter(a.db)
    return open_writer(a.db, backend)


def _write_all(a, backend, out, results, progress) -> tuple[int, Counter]:
    """Write the results in order; warn about skipped images; enforce one size where needed."""
    skipped = Counter()
    written, first_shape = 0, None
    for r in results:
        e = r.entry
        if r.skip == "blank":
            continue
        if r.skip:
            skipped[r.skip] += 1
            progress.clear()
            _say(f"warning: {a.listfile}:{e.line}: {r.reason}; skipped")
        else:
            if first_shape is None:
                first_shape = r.shape
            elif r.shape != first_shape and (a.check_size or backend == "hdf5"):
                progress.clear()
                why = "--check_size" if a.check_size else "HDF5 needs one size; resize with --resize_*"
                raise DataError(
                    f"{a.listfile}:{e.line}: '{e.path}' is {'x'.join(map(str, r.shape))} (C×H×W), the first "
                    f"image was {'x'.join(map(str, first_shape))} ({why}); nothing was written"
                )
            if backend == "hdf5":
                out.put(r.payload, e.label)
            else:
                out.put(e.key, r.payload)
            written += 1
            if written % 1000 == 0 and not progress.enabled:
                _say(f"Processed {written} files.")
        progress.update(written + sum(skipped.values()))
    return written, skipped


def convert_imageset(argv) -> int:
    a = _parser().parse_args(gflags_booleans(argv, BOOL_FLAGS))
    backend = a.backend.lower()
    if backend not in ("lmdb", "leveldb", "hdf5"):
        raise DataError(f"--backend {a.backend}: expected lmdb, leveldb or hdf5")
    height, width = max(0, a.resize_height), max(0, a.resize_width)
    if (height > 0) != (width > 0):
        raise DataError("give both --resize_width and --resize_height (or neither)")
    encoding = ""
    if a.encode_type:
        encoding = canonical_type(a.encode_type)
        if not a.encoded:
            _say("encode_type specified, assuming encoded=true.")
    elif a.encoded:
        encoding = "file"
    if backend == "hdf5" and encoding:
        raise DataError("--backend hdf5 stores float pixels; --encoded / --encode_type do not apply")

    entries, notes = imageset.read_list(a.listfile, float_labels=backend == "hdf5")
    for n in notes[:5]:
        _say(f"note: {n}")
    if len(notes) > 5:
        _say(f"note: ... and {len(notes) - 5} more labels truncated to integers")
    if a.shuffle:
        _say(f"Shuffling data (seed {SHUFFLE_SEED})")
        entries = imageset.shuffled(entries, SHUFFLE_SEED)
    images = sum(e.path is not None for e in entries)
    _say(f"A total of {images} images.")

    jobs = a.jobs if a.jobs > 0 else _cores()
    job = imageset.Job(
        a.root, color=not a.gray, height=height, width=width, encoding=encoding, as_array=backend == "hdf5"
    )
    progress = Progress(images, unit="images", enabled=sys.stderr.isatty())
    start = time.monotonic()
    with _open_output(a, backend) as out, closing(imageset.process_all(entries, job, jobs)) as results:
        written, skipped = _write_all(a, backend, out, results, progress)
        if written == 0:
            progress.clear()
            raise DataError(f"{a.listfile}: none of its {images} images could be read; nothing was written")
    progress.finish()
    seconds = time.monotonic() - start
    summary = (
        f"wrote {written} images to {a.db} ({backend}) in {seconds:.1f} s "
        f"({written / max(seconds, 1e-9):.0f} images/s, {jobs} process{'es' if jobs > 1 else ''})"
    )
    if skipped:
        why = ", ".join(f"{n} {k}" for k, n in sorted(skipped.items()))
        summary += f"; skipped {sum(skipped.values())} ({why})"
    if backend == "hdf5":
        summary += f"; HDF5Data source: {os.path.join(a.db, imageset.HDF5_LIST_NAME)}"
        if out.note:
            _say(f"note: {out.note}")
    _say(summary)
    return 0
