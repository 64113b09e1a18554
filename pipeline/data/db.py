"""Key-value databases of records (LMDB, LevelDB), as Caffe's ``db::DB`` reads and writes them.

Reading::

    with open_reader("examples/mnist/mnist_train_lmdb") as db:     # backend="lmdb" | "leveldb"
        n = len(db)
        for key, value in db.items(start=rand_skip):               # bytes, bytes; key order
            ...
        value = db.get("00000007_cat.jpg")

``items(start)`` runs once from position ``start`` to the end; a data layer that
cycles over the database calls it again (Caffe's cursor ``SeekToFirst`` on end).

Writing::

    with open_writer("train_lmdb", backend="lmdb") as db:          # refuses an existing target
        db.put(key, datum.SerializeToString())

A writer builds the database under a temporary name beside the target
(``.train_lmdb.<random>.tmp``) and renames it to the target only when the
``with`` block ends without an exception: an interrupted or failed run never
leaves a database that looks complete. Records are committed every 1000 puts, as
Caffe's tools do. An LMDB's map size starts small and doubles whenever a commit
needs more room (Caffe's ``LMDB_MAP_SIZE`` growth on ``MDB_MAP_FULL``).

LMDB databases are directories holding ``data.mdb`` and ``lock.mdb`` (Caffe's
layout); a single-file LMDB can be read too. They are opened for reading without
a lock (``lock=False``) so read-only media work; a database must not be written
while it is read, which the temporary-name writer guarantees for ours.

LevelDB needs the optional ``plyvel`` package (``pip install plyvel``); without it
opening a LevelDB raises a DataError that says so.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from pathlib import Path

from ..errors import DataError

BACKENDS = ("lmdb", "leveldb")
COMMIT_EVERY = 1000  # Caffe's tools commit a transaction every 1000 records
LMDB_INITIAL_MAP_SIZE = 1 << 26  # 64 MiB; doubled on MDB_MAP_FULL


def _key(key) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8", "surrogateescape")  # list files with non-UTF-8 names round-trip
    return bytes(key)


def _show(key) -> str:
    return _key(key).decode("utf-8", "backslashreplace")


def _check_backend(backend: str) -> str:
    b = str(backend).lower()
    if b not in BACKENDS:
        raise DataError(f"unknown database backend '{backend}'; expected one of: {', '.join(BACKENDS)}")
    return b


def _plyvel(path):
    try:
        import plyvel
    except ImportError:
        raise DataError(
            f"{path}: LevelDB needs the optional 'plyvel' package (pip install plyvel, or the 'leveldb' extra), "
            "or use --backend lmdb"
        ) from None
    return plyvel


# ------------------------------------------------------------------ reading --


class Reader:
    """A read-only database: ``len``, ``items(start)``, ``get(key)``; a context manager.

    Keys and values are ``bytes``; ``get`` and ``items`` also take ``str`` keys.
    """

    backend = ""

    def __init__(self, path):
        self.path = str(path)

    def __len__(self) -> int:
        raise NotImplementedError

    def items(self, start=0):
        """Yield (key, value) pairs in key order from ``start`` (a position, or the first key ≥ a key)."""
        raise NotImplementedError

    def get(self, key) -> bytes:
        """The value stored under ``key``; a missing key is a DataError naming it and the database."""
        raise NotImplementedError

    def keys(self):
        for kv in self.items():
            yield kv[0]

    def __iter__(self):
        return self.items()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _missing(self, key):
        return DataError(f"{self.path}: no record with key '{_show(key)}'")

    def __repr__(self):
        return f"<{type(self).__name__} {self.path!r}>"


class LmdbReader(Reader):
    backend = "lmdb"

    def __init__(self, path):
        import lmdb

        super().__init__(path)
        p = Path(path)
        if not p.exists():
            raise DataError(f"{path}: no such database (LMDB)")
        if p.is_dir() and not (p / "data.mdb").is_file():
            raise DataError(f"{path}: not an LMDB database (the directory has no data.mdb)")
        self._key = os.path.realpath(p)
        with _ENVS_LOCK:
            hit = _ENVS.get(self._key)
            if hit is None:
                try:
                    env = lmdb.open(str(p), readonly=True, lock=False, subdir=p.is_dir(), readahead=False,
                                    max_readers=512)
                except lmdb.Error as e:
                    raise DataError(f"{path}: not an LMDB database ({e})") from None
                hit = _ENVS[self._key] = [env, 0]
            hit[1] += 1
            self.env = hit[0]

    def __len__(self) -> int:
        return int(self.env.stat()["entries"])

    def items(self, start=0):
        with self.env.begin(buffers=False) as txn:
            cur = txn.cursor()
            if isinstance(start, (str, bytes, bytearray)):
                ok = cur.set_range(_key(start))
            else:
                if int(start) < 0:
                    raise DataError(f"{self.path}: start position must be >= 0, got {start}")
                ok = cur.first()
                for _ in range(int(start)):
                    if not ok:
                        break
                    ok = cur.next()
            while ok:
                yield cur.key(), cur.value()
                ok = cur.next()

    def get(self, key) -> bytes:
        with self.env.begin(buffers=False) as txn:
            value = txn.get(_key(key))
        if value is None:
            raise self._missing(key)
        return value

    def close(self) -> None:
        if getattr(self, "env", None) is None:
            return
        self.env = None
        with _ENVS_LOCK:
            hit = _ENVS.get(self._key)
            if hit is not None:
                hit[1] -= 1
                if hit[1] <= 0:
                    del _ENVS[self._key]
                    hit[0].close()


# py-lmdb refuses to open one environment twice in a process (a train and a test
# net on the same database, two pycaffe Nets): readers share it, reference counted.
_ENVS: dict = {}  # real path -> [environment, readers]
_ENVS_LOCK = threading.Lock()


class LevelDbReader(Reader):
    backend = "leveldb"

    def __init__(self, path):
        plyvel = _plyvel(path)
        super().__init__(path)
        if not Path(path).exists():
            raise DataError(f"{path}: no such database (LevelDB)")
        try:
            self.db = plyvel.DB(str(path), create_if_missing=False)
        except (plyvel.Error, OSError) as e:
            raise DataError(f"{path}: not a LevelDB database ({e})") from None
        self._len = None

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self.db.iterator(include_value=False))
        return self._len

    def items(self, start=0):
        if isinstance(start, (str, bytes, bytearray)):
            yield from self.db.iterator(start=_key(start))
            return
        if int(start) < 0:
            raise DataError(f"{self.path}: start position must be >= 0, got {start}")
        it = self.db.iterator()
        for i, kv in enumerate(it):
            if i >= start:
                yield kv

    def get(self, key) -> bytes:
        value = self.db.get(_key(key))
        if value is None:
            raise self._missing(key)
        return value

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None


def open_reader(path, backend: str = "lmdb") -> Reader:
    """Open the database at ``path`` for reading (``backend``: 'lmdb' or 'leveldb').

    A missing path or something that is not a database of that kind is a DataError naming it.
    """
    b = _check_backend(backend)
    return LmdbReader(path) if b == "lmdb" else LevelDbReader(path)


# ------------------------------------------------------------------ writing --


class StagedDirectory:
    """A directory built under a temporary name beside ``target`` and renamed onto it at the end.

    ``commit()`` renames it to ``target`` (replacing an existing one only when
    ``overwrite``); ``discard()`` removes it. The temporary name starts with a dot
    and ends in ``.tmp``, so a crash leaves nothing that looks like the output.
    """

    def __init__(self, target, overwrite: bool = False):
        self.target = Path(target)
        self.overwrite = overwrite
        if not str(target) or self.target.name in ("", ".", ".."):
            raise DataError(f"'{target}': not a usable output name")
        self._refuse_existing()
        parent = self.target.parent
        if not parent.is_dir():
            raise DataError(f"{target}: the folder {parent} does not exist")
        for _ in range(100):
            tmp = parent / f".{self.target.name}.{secrets.token_hex(4)}.tmp"
            try:
                os.mkdir(tmp)  # default permissions (mkdtemp's 0700 would outlive the rename)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise DataError(f"{target}: cannot create a folder beside it ({e.strerror or e})") from None
        self.path = tmp

    def _refuse_existing(self):
        if (self.target.exists() or self.target.is_symlink()) and not self.overwrite:
            raise DataError(f"{self.target}: already exists; remove it or choose another name (nothing was written)")

    def commit(self) -> None:
        self._refuse_existing()
        trash = None
        if self.target.exists() or self.target.is_symlink():
            trash = self.target.with_name(f".{self.target.name}.{secrets.token_hex(4)}.old")
            os.rename(self.target, trash)
        os.rename(self.path, self.target)
        if trash is not None:
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class StagedWriter:
    """Output built in a ``StagedDirectory`` (``self._stage``): ``close()`` finishes it and
    renames it into place; ``abort()`` -- or an exception inside ``with`` -- throws it
    away, leaving the target as it was. Subclasses set ``_stage`` and ``_open = True`` and
    implement ``_finish()`` (write what is left, close the files) and ``_release()``
    (close the files, on the way to discarding them)."""

    _open = False

    def _finish(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output and rename it to its final name."""
        if not self._open:
            return
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._open = False
        try:
            self._stage.commit()
        except BaseException:
            self._stage.discard()
            raise

    def abort(self) -> None:
        """Throw the unfinished output away; the target is left as it was."""
        if not self._open:
            return
        self._open = False
        try:
            self._release()
        except Exception:  # noqa: BLE001, S110 - the files are being thrown away anyway
            pass
        self._stage.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Writer(StagedWriter):
    """A database being written: ``put(key, value)``, then ``close()`` (or leave the ``with`` block).

    Records are buffered and committed every ``commit_every`` puts; ``close``
    commits the rest and renames the database into place; ``abort`` (or an
    exception inside ``with``) throws it away. ``len(writer)`` counts the puts.
    """

    backend = ""

    def __init__(self, path, overwrite: bool = False, commit_every: int = COMMIT_EVERY):
        self.path = str(path)
        self.commit_every = max(1, int(commit_every))
        self._stage = StagedDirectory(path, overwrite)
        self._pending: list[tuple[bytes, bytes]] = []
        self._count = 0
        self._open = True
        try:
            self._open_store(self._stage.path)
        except BaseException:
            self._stage.discard()
            raise

    # backends implement these three
    def _open_store(self, directory: Path) -> None:
        raise NotImplementedError

    def _write_batch(self, batch) -> None:
        raise NotImplementedError

    def _close_store(self) -> None:
        raise NotImplementedError

    def _check_key(self, key: bytes, shown) -> None:
        if not key:
            raise DataError(f"{self.path}: empty keys cannot be stored")

    def put(self, key, value) -> None:
        """Store ``value`` (bytes) under ``key`` (str or bytes); a later put of the same key replaces it."""
        if not self._open:
            raise DataError(f"{self.path}: the database writer is closed")
        k = _key(key)
        self._check_key(k, key)
        self._pending.append((k, bytes(value)))
        self._count += 1
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        """Write the buffered records in one transaction."""
        if self._pending:
            self._write_batch(self._pending)
            self._pending = []

    def __len__(self) -> int:
        return self._count

    def _finish(self) -> None:  # close(): commit what is left, close the database
        self.commit()
        self._close_store()

    def _release(self) -> None:  # abort()
        self._pending = []
        self._close_store()


class LmdbWriter(Writer):
    backend = "lmdb"

    def _open_store(self, directory):
        import lmdb

        self._lmdb = lmdb
        # sync=False while writing; close() syncs once before the rename makes it visible.
        self.env = lmdb.open(str(directory), map_size=LMDB_INITIAL_MAP_SIZE, subdir=True, sync=False, meminit=False)
        self._max_key = self.env.max_key_size()

    def _check_key(self, key, shown):
        super()._check_key(key, shown)
        if len(key) > self._max_key:
            raise DataError(
                f"{self.path}: key '{_show(key)}' is {len(key)} bytes; LMDB keys hold at most {self._max_key}"
            )

    def _write_batch(self, batch):
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in batch:
                        txn.put(k, v)
                return
            except self._lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def _close_store(self):
        if getattr(self, "env", None) is not None:
            env, self.env = self.env, None
            try:
                env.sync(True)
            finally:
                env.close()


class LevelDbWriter(Writer):
    backend = "leveldb"

    def _open_store(self, directory):
        plyvel = _plyvel(self.path)
        # Caffe's LevelDB options: 64 KiB blocks, 256 MiB write buffer.
        self.db = plyvel.DB(
            str(directory), create_if_missing=True, error_if_exists=True, block_size=65536, write_buffer_size=268435456
        )

    def _write_batch(self, batch):
        with self.db.write_batch() as wb:
            for k, v in batch:
                wb.put(k, v)

    def _close_store(self):
        if getattr(self, "db", None) is not None:
            db, self.db = self.db, None
            db.close()


def open_writer(path, backend: str = "lmdb", overwrite: bool = False, commit_every: int = COMMIT_EVERY) -> Writer:
    """Create a new database at ``path`` (``backend``: 'lmdb' or 'leveldb') and return its Writer.

    An existing ``path`` is refused (DataError) unless ``overwrite``; even then it is
    replaced only when the writer closes successfully.
    """
    b = _check_backend(backend)
    if b == "leveldb":
        _plyvel(path)  # fail before creating anything
    cls = LmdbWriter if b == "lmdb" else LevelDbWriter
    return cls(path, overwrite=overwrite, commit_every=commit_every)
