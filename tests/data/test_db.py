"""LMDB / LevelDB readers and writers: round trips checked with plain ``lmdb``, atomic writes, errors."""

from __future__ import annotations

import lmdb
import pytest

from pipeline.data import db as dbmod
from pipeline.data.db import open_reader, open_writer
from pipeline.errors import DataError

try:
    import plyvel
except ImportError:
    plyvel = None


def records(n, size=16):
    return [(f"{i:08d}_img{i}.jpg", bytes([i % 256]) * size) for i in range(n)]


def plain_lmdb(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        out = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    env.close()
    return out


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_lmdb_round_trip_in_key_order_across_commits(tmp_path):
    path = tmp_path / "train_lmdb"
    recs = records(2345)
    with open_writer(path) as w:
        for k, v in reversed(recs):  # written out of order: LMDB keeps key order
            w.put(k, v)
        assert len(w) == 2345
        assert not path.exists()  # under a temporary name until closed
    assert (path / "data.mdb").is_file()
    expected = [(k.encode(), v) for k, v in recs]
    assert plain_lmdb(path) == expected
    with open_reader(path) as r:
        assert len(r) == 2345
        assert list(r.items()) == expected
        assert list(r.items(start=2340)) == expected[2340:]
        assert list(r.items(start=2345)) == []
        assert next(iter(r.items(start="00000100"))) == expected[100]
        assert r.get("00000007_img7.jpg") == bytes([7]) * 16
        assert r.get(b"00000007_img7.jpg") == bytes([7]) * 16
        with pytest.raises(DataError, match="no record with key 'nope'"):
            r.get("nope")
    assert leftovers(tmp_path) == []


def test_lmdb_map_grows_as_needed(tmp_path, monkeypatch):
    monkeypatch.setattr(dbmod, "LMDB_INITIAL_MAP_SIZE", 1 << 20)  # 1 MiB, then doubling
    path = tmp_path / "big"
    with open_writer(path, commit_every=50) as w:
        for i in range(300):
            w.put(f"{i:05d}", bytes(20_000))  # ~6 MB in all
    with open_reader(path) as r:
        assert len(r) == 300
        assert r.get("00299") == bytes(20_000)
    info = lmdb.open(str(path), readonly=True, lock=False).info()
    assert info["map_size"] >= 6_000_000


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out_lmdb"
    with pytest.raises(RuntimeError), open_writer(path) as w:
        for k, v in records(1500):
            w.put(k, v)
        raise RuntimeError("interrupted")
    assert not path.exists()
    assert leftovers(tmp_path) == []


def test_existing_target_is_refused_unless_overwrite(tmp_path):
    path = tmp_path / "db"
    with open_writer(path) as w:
        w.put("a", b"1")
    with pytest.raises(DataError, match="already exists"):
        open_writer(path)
    assert plain_lmdb(path) == [(b"a", b"1")]
    with open_writer(path, overwrite=True) as w:
        w.put("b", b"2")
        assert plain_lmdb(path) == [(b"a", b"1")]  # old one stays until the new one is complete
    assert plain_lmdb(path) == [(b"b", b"2")]
    assert leftovers(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="already exists"):
        open_writer(tmp_path / "file")


def test_bad_keys_and_targets(tmp_path):
    with open_writer(tmp_path / "k") as w:
        with pytest.raises(DataError, match="LMDB keys hold at most 511"):
            w.put("x" * 600, b"")
        with pytest.raises(DataError, match="empty keys"):
            w.put("", b"v")
        w.put("ok", b"v")
    with pytest.raises(DataError, match="does not exist"):
        open_writer(tmp_path / "no" / "such" / "db")
    with pytest.raises(DataError, match="unknown database backend 'rocksdb'"):
        open_writer(tmp_path / "r", backend="rocksdb")


def test_reader_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="missing_lmdb: no such database"):
        open_reader(tmp_path / "missing_lmdb")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="empty_dir: not an LMDB database"):
        open_reader(tmp_path / "empty_dir")
    junk = tmp_path / "junk.mdb"
    junk.write_bytes(b"not a database at all" * 300)
    with pytest.raises(DataError, match="junk.mdb: not an LMDB database"):
        open_reader(junk)
    with pytest.raises(DataError, match="start position"):
        with open_writer(tmp_path / "ok") as w:
            w.put("a", b"")
        list(open_reader(tmp_path / "ok").items(start=-1))


def test_reads_a_database_written_with_plain_lmdb(tmp_path):
    env = lmdb.open(str(tmp_path / "caffe_style"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k, v in records(10):
            txn.put(k.encode(), v)
    env.close()
    with open_reader(tmp_path / "caffe_style") as r:
        assert [k for k, _ in r.items()] == [k.encode() for k, _ in records(10)]


@pytest.mark.skipif(plyvel is not None, reason="plyvel is installed")
def test_leveldb_without_plyvel_says_how_to_install(tmp_path):
    for call in (lambda: open_writer(tmp_path / "l", "leveldb"), lambda: open_reader(tmp_path / "l", "leveldb")):
        with pytest.raises(DataError, match=r"pip install plyvel"):
            call()
    assert leftovers(tmp_path) == [] and not (tmp_path / "l").exists()


@pytest.mark.skipif(plyvel is None, reason="plyvel (optional LevelDB support) is not installed")
def test_leveldb_round_trip(tmp_path):
    path = tmp_path / "train_leveldb"
    recs = records(1200)
    with open_writer(path, "leveldb") as w:
        for k, v in recs:
            w.put(k, v)
    raw = plyvel.DB(str(path))
    assert [(k, v) for k, v in raw.iterator()] == [(k.encode(), v) for k, v in recs]
    raw.close()
    with open_reader(path, "leveldb") as r:
        assert len(r) == 1200
        assert list(r.items(start=1199)) == [(recs[-1][0].encode(), recs[-1][1])]
        assert r.get(recs[5][0]) == recs[5][1]
    with pytest.raises(DataError, match="not a LevelDB database"):
        (tmp_path / "notdb").mkdir()
        open_reader(tmp_path / "notdb", "leveldb")
    assert leftovers(tmp_path) == []
