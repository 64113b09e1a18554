"""convert_imageset end to end: databases read back with plain ``lmdb`` + ``caffe_pb2`` (and h5py)."""

from __future__ import annotations

import io
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest
from PIL import Image

from pipeline.commands import cli
from pipeline.data.imageset import Hdf5SetWriter
from pipeline.proto import caffe_pb2

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

try:
    import plyvel
except ImportError:
    plyvel = None

ZOO = "BVLC__caffe/examples/images"


def run(argv, capsys):
    code = cli.run_command("convert_imageset", cli.TOOLS["convert_imageset"], [str(a) for a in argv])
    return code, capsys.readouterr().err


def read_db(path):
    """[(key, Datum)] in key order, with nothing but lmdb and caffe_pb2."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    out = []
    with env.begin() as txn:
        for k, v in txn.cursor():
            d = caffe_pb2.Datum()
            d.ParseFromString(v)
            out.append((k.decode(), d))
    env.close()
    return out


def pixels(d):
    return np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)


def reference_bgr(data: bytes, gray=False):
    """OpenCV's decode when cv2 is present, else Pillow's RGB reversed (gray: Pillow's luma)."""
    if cv2 is not None:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
        return img[:, :, None] if gray else img
    im = Image.open(io.BytesIO(data))
    if gray:
        im.draft("L", im.size)
        return np.asarray(im.convert("L"))[:, :, None]
    return np.asarray(im.convert("RGB"))[:, :, ::-1]


def save(path, rgb, fmt="PNG", **kw):
    Image.fromarray(rgb).save(path, fmt, **kw)
    return rgb


@pytest.fixture
def images(tmp_path):
    """A folder of generated images and their RGB arrays."""
    rng = np.random.default_rng(0)
    root = tmp_path / "img"
    (root / "sub").mkdir(parents=True)
    arrays = {
        "a.png": save(root / "a.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
        "sub/b.png": save(root / "sub/b.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
        "my photo.png": save(root / "my photo.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
        "c.jpg": save(root / "c.jpg", np.kron(rng.integers(0, 256, (5, 6, 3)), np.ones((4, 5, 1))).astype(np.uint8),
                      "JPEG", quality=90),
        "small.png": save(root / "small.png", rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)),
    }
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    return root, arrays


def write_list(tmp_path, lines, name="list.txt"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines))
    return p


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_keys_labels_shapes_and_bgr_pixels_with_skips(tmp_path, images, capsys):
    root, arrays = images
    lst = write_list(tmp_path, ["a.png 3", "sub/b.png 1", "missing.png 2", "my photo.png 0", "broken.jpg 5",
                                "c.jpg 9"])
    code, err = run([f"{root}/", lst, tmp_path / "db", "--jobs", "2"], capsys)
    assert code == 0, err
    recs = read_db(tmp_path / "db")
    assert [k for k, _ in recs] == ["00000000_a.png", "00000001_sub/b.png", "00000003_my photo.png",
                                    "00000005_c.jpg"]
    assert [d.label for _, d in recs] == [3, 1, 0, 9]
    for key, d in recs:
        name = key[9:]
        assert (d.channels, d.height, d.width) == (3, 20, 30) and not d.encoded
        if name.endswith(".png"):
            assert np.array_equal(pixels(d), arrays[name][:, :, ::-1].transpose(2, 0, 1))  # exact, BGR
        else:
            ref = reference_bgr((root / name).read_bytes())
            assert np.array_equal(pixels(d), ref.transpose(2, 0, 1))
    assert f"{lst}:3: no such file" in err and f"{lst}:5: " in err and "not a decodable image" in err
    assert "wrote 4 images" in err and "skipped 2 (1 missing, 1 undecodable)" in err
    assert leftovers(tmp_path) == []


def test_zoo_jpegs_exact_without_resize_and_within_one_level_with_resize(tmp_path, caffe_zoo, capsys):
    lst = write_list(tmp_path, ["cat.jpg 281", "fish-bike.jpg 671"])
    root = caffe_zoo / ZOO
    assert run([f"{root}/", lst, tmp_path / "full"], capsys)[0] == 0
    assert run([f"{root}/", lst, tmp_path / "small", "--resize_width=227", "--resize_height=200"], capsys)[0] == 0
    assert run([f"{root}/", lst, tmp_path / "gray", "--gray"], capsys)[0] == 0
    full, small, gray = (read_db(tmp_path / n) for n in ("full", "small", "gray"))
    worst_gray_gap = 0
    for (key, d), (_, s), (_, g) in zip(full, small, gray):
        data = (root / key[9:]).read_bytes()
        ref = reference_bgr(data)
        assert np.array_equal(pixels(d), ref.transpose(2, 0, 1))
        assert (s.channels, s.height, s.width) == (3, 200, 227)
        if cv2 is not None:
            ref_small = cv2.resize(ref, (227, 200), interpolation=cv2.INTER_LINEAR)
            assert np.abs(pixels(s).astype(int) - ref_small.transpose(2, 0, 1)).max() <= 1
        luma = reference_bgr(data, gray=True)
        assert g.channels == 1 and np.array_equal(pixels(g)[0], luma[:, :, 0])
        b, gr, r = (ref[:, :, i].astype(np.int64) for i in range(3))
        converted = (b * 1868 + gr * 9617 + r * 4899 + 8192) >> 14  # RGB->gray: what --gray must NOT do
        worst_gray_gap = max(worst_gray_gap, int(np.abs(converted - luma[:, :, 0]).max()))
    assert [d.label for _, d in full] == [281, 671]
    assert worst_gray_gap >= 1


def test_one_and_two_processes_write_identical_databases(tmp_path, images, capsys):
    root, _ = images
    lines = [f"{n} {i}" for i, n in enumerate(["a.png", "sub/b.png", "c.jpg", "my photo.png"] * 6)]
    lst = write_list(tmp_path, lines)
    args = [f"{root}/", lst]
    assert run(args + [tmp_path / "one", "--jobs=1", "--resize_width=17", "--resize_height=13"], capsys)[0] == 0
    assert run(args + [tmp_path / "two", "--jobs=2", "--resize_width=17", "--resize_height=13"], capsys)[0] == 0
    one, two = read_db(tmp_path / "one"), read_db(tmp_path / "two")
    assert len(one) == 24 and [(k, d.SerializeToString()) for k, d in one] == [
        (k, d.SerializeToString()) for k, d in two
    ]


def test_encoded_records(tmp_path, images, capsys):
    root, _ = images
    lst = write_list(tmp_path, ["a.png 1", "c.jpg 2"])
    assert run([root, lst, tmp_path / "enc", "--encoded"], capsys)[0] == 0
    for key, d in read_db(tmp_path / "enc"):
        assert d.encoded and d.data == (root / key[9:]).read_bytes()  # the file's bytes, unchanged
        assert (d.channels, d.height, d.width) == (3, 20, 30)  # filled in (Caffe leaves 0)
    assert run([root, lst, tmp_path / "png", "--encode_type=png", "--resize_width=15", "--resize_height=10"],
               capsys)[0] == 0
    for key, d in read_db(tmp_path / "png"):
        assert d.encoded and d.data[:4] == b"\x89PNG" and (d.channels, d.height, d.width) == (3, 10, 15)
        decoded = np.asarray(Image.open(io.BytesIO(d.data)).convert("RGB"))[:, :, ::-1]
        assert decoded.shape == (10, 15, 3)
    code, err = run([root, lst, tmp_path / "jpg", "--encode_type", "jpg"], capsys)
    assert code == 0 and "assuming encoded=true" in err
    a, c = read_db(tmp_path / "jpg")
    assert a[1].data[:3] == b"\xff\xd8\xff" and c[1].data == (root / "c.jpg").read_bytes()


def test_shuffle_is_seeded_and_renumbers_keys(tmp_path, images, capsys):
    root, _ = images
    names = ["a.png", "sub/b.png", "c.jpg", "my photo.png", "small.png"]
    lst = write_list(tmp_path, [f"{n} {i}" for i, n in enumerate(names)])
    code, err = run([root, lst, tmp_path / "s1", "-shuffle"], capsys)
    assert code == 0 and "seed 1701" in err
    assert run([root, lst, tmp_path / "s2", "--shuffle=true"], capsys)[0] == 0
    s1, s2 = read_db(tmp_path / "s1"), read_db(tmp_path / "s2")
    order = np.random.RandomState(1701).permutation(5)
    assert [k for k, _ in s1] == [f"{i:08d}_{names[j]}" for i, j in enumerate(order)]
    assert [d.label for _, d in s1] == [int(j) for j in order]
    assert [k for k, _ in s1] == [k for k, _ in s2]
    assert run([root, lst, tmp_path / "s3", "--shuffle=false"], capsys)[0] == 0
    assert [k for k, _ in read_db(tmp_path / "s3")][:2] == ["00000000_a.png", "00000001_sub/b.png"]


def test_check_size_stops_at_first_other_size_and_writes_nothing(tmp_path, images, capsys):
    root, _ = images
    lst = write_list(tmp_path, ["a.png 0", "c.jpg 1", "small.png 2", "sub/b.png 3"])
    code, err = run([root, lst, tmp_path / "db", "--check_size"], capsys)
    assert code == 1 and f"{lst}:3: 'small.png' is 3x10x12" in err and "3x20x30" in err
    assert not (tmp_path / "db").exists() and leftovers(tmp_path) == []
    assert run([root, lst, tmp_path / "db"], capsys)[0] == 0  # without the flag sizes may differ
    assert [d.height for _, d in read_db(tmp_path / "db")] == [20, 20, 10, 20]


@pytest.mark.parametrize(
    "line,message",
    [("a.png", "no label after the path"), ("a.png cat", "the label 'cat' is not a number"),
     ("a.png 99999999999", "does not fit")],
)
def test_malformed_lines_are_errors_naming_the_line(tmp_path, images, capsys, line, message):
    root, _ = images
    lst = write_list(tmp_path, ["sub/b.png 1", line])
    code, err = run([root, lst, tmp_path / "db"], capsys)
    assert code == 1 and f"{lst}:2:" in err and message in err
    assert not (tmp_path / "db").exists()


def test_float_labels_truncate_like_atoi_and_blank_lines_keep_numbering(tmp_path, images, capsys):
    root, _ = images
    lst = write_list(tmp_path, ["a.png 3.7", "", "sub/b.png\t-2", "my photo.png  4"])
    code, err = run([root, lst, tmp_path / "db"], capsys)
    assert code == 0 and "label '3.7' stored as 3" in err
    recs = read_db(tmp_path / "db")
    assert [(k, d.label) for k, d in recs] == [("00000000_a.png", 3), ("00000002_sub/b.png", -2),
                                              ("00000003_my photo.png", 4)]


def test_existing_output_is_never_overwritten(tmp_path, images, capsys):
    root, _ = images
    lst = write_list(tmp_path, ["a.png 1"])
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "keep.txt").write_text("mine")
    code, err = run([root, lst, tmp_path / "db"], capsys)
    assert code == 1 and "already exists" in err
    assert (tmp_path / "db" / "keep.txt").read_text() == "mine"


def test_nothing_readable_writes_nothing(tmp_path, images, capsys):
    root, _ = images
    lst = write_list(tmp_path, ["gone.png 1", "broken.jpg 2"])
    code, err = run([root, lst, tmp_path / "db"], capsys)
    assert code == 1 and "none of its 2 images could be read" in err
    assert not (tmp_path / "db").exists() and leftovers(tmp_path) == []


def test_flag_errors(tmp_path, images, capsys):
    root, _ = images
    lst = write_list(tmp_path, ["a.png 1"])
    for extra, message in (
        (["--resize_width=10"], "both --resize_width and --resize_height"),
        (["--backend=rocksdb"], "expected lmdb, leveldb or hdf5"),
        (["--encode_type=xyz"], "unknown image type 'xyz'"),
        (["--backend=hdf5", "--encoded"], "do not apply"),
    ):
        code, err = run([root, lst, tmp_path / "db"] + extra, capsys)
        assert code == 1 and message in err, (extra, err)
    assert not (tmp_path / "db").exists()


def test_root_folder_without_trailing_slash(tmp_path, images, capsys):
    root, _ = images
    lst = write_list(tmp_path, ["a.png 1"])
    assert run([str(root), lst, tmp_path / "db"], capsys)[0] == 0
    assert len(read_db(tmp_path / "db")) == 1


def test_hdf5_backend_with_several_float_labels(tmp_path, images, capsys):
    root, arrays = images
    lst = write_list(tmp_path, ["a.png 0.5 1 -2", "my photo.png 3 4e-1 5", "missing.png 1 1 1", "sub/b.png 7 8 9"])
    code, err = run([root, lst, tmp_path / "h5", "--backend=hdf5"], capsys)
    assert code == 0, err
    listing = (tmp_path / "h5" / "list.txt").read_text().split()
    assert listing == [str((tmp_path / "h5" / "part-00000.h5").absolute())]
    with h5py.File(listing[0], "r") as f:
        data, label = f["data"], f["label"]
        assert data.dtype == np.float32 and data.shape == (3, 3, 20, 30)
        assert data.chunks == (1, 3, 20, 30) and data.compression == "gzip"
        assert np.array_equal(label[()], np.float32([[0.5, 1, -2], [3, 0.4, 5], [7, 8, 9]]))
        for i, name in enumerate(["a.png", "my photo.png", "sub/b.png"]):
            assert np.array_equal(data[i], arrays[name][:, :, ::-1].transpose(2, 0, 1).astype(np.float32))
    lst1 = write_list(tmp_path, ["a.png 2", "small.png 1"], "one.txt")
    code, err = run([root, lst1, tmp_path / "h5b", "--backend=hdf5", "--gray"], capsys)
    assert code == 1 and "HDF5 needs one size" in err and not (tmp_path / "h5b").exists()
    assert run([root, lst1, tmp_path / "h5b", "--backend=hdf5", "--gray", "--resize_height=8",
                "--resize_width=9"], capsys)[0] == 0
    with h5py.File(tmp_path / "h5b" / "part-00000.h5", "r") as f:
        assert f["data"].shape == (2, 1, 8, 9) and np.array_equal(f["label"][()], [2, 1])


def test_hdf5_writer_splits_files_and_aborts_cleanly(tmp_path):
    imgs = np.random.default_rng(3).integers(0, 256, (7, 1, 4, 5), dtype=np.uint8)
    with Hdf5SetWriter(tmp_path / "parts", file_bytes=3 * 4 * 20, buffer=2) as w:
        for i, img in enumerate(imgs):
            w.put(img, (i,))
    files = (tmp_path / "parts" / "list.txt").read_text().split()
    assert [Path(f).name for f in files] == ["part-00000.h5", "part-00001.h5", "part-00002.h5"]
    got = []
    for f in files:
        with h5py.File(f, "r") as h:
            got += list(zip(h["data"][()], h["label"][()]))
    assert len(got) == 7 and all(np.array_equal(d, imgs[i]) and lab == i for i, (d, lab) in enumerate(got))
    with pytest.raises(KeyError), Hdf5SetWriter(tmp_path / "aborted") as w:
        w.put(imgs[0], (1,))
        raise KeyError("stop")
    assert not (tmp_path / "aborted").exists() and leftovers(tmp_path) == []


@pytest.mark.skipif(plyvel is not None, reason="plyvel is installed")
def test_leveldb_without_plyvel_fails_clearly(tmp_path, images, capsys):
    root, _ = images
    code, err = run([root, write_list(tmp_path, ["a.png 1"]), tmp_path / "ldb", "--backend=leveldb"], capsys)
    assert code == 1 and "pip install plyvel" in err and not (tmp_path / "ldb").exists()


@pytest.mark.skipif(plyvel is None, reason="plyvel (optional LevelDB support) is not installed")
def test_leveldb_backend(tmp_path, images, capsys):
    root, arrays = images
    assert run([root, write_list(tmp_path, ["a.png 1"]), tmp_path / "ldb", "--backend=leveldb"], capsys)[0] == 0
    db = plyvel.DB(str(tmp_path / "ldb"))
    (key, value), = list(db.iterator())
    db.close()
    d = caffe_pb2.Datum.FromString(value)
    assert key == b"00000000_a.png" and np.array_equal(pixels(d), arrays["a.png"][:, :, ::-1].transpose(2, 0, 1))


def _cmd(*args):
    return [sys.executable, "-m", "pipeline", "convert_imageset", *map(str, args)]


def test_progress_bar_only_on_a_terminal(tmp_path, images, capsys):
    root, _ = images
    lst = write_list(tmp_path, ["a.png 1", "sub/b.png 2"])
    code, err = run([root, lst, tmp_path / "p1"], capsys)
    assert code == 0 and "\r" not in err and "wrote 2 images" in err
    master, slave = pty.openpty()
    proc = subprocess.Popen(_cmd(root, lst, tmp_path / "p2"), stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    shown = b"".join(chunks).decode()
    assert "\r" in shown and "2/2 [" in shown and "images/s" in shown


@pytest.mark.parametrize("jobs", [1, 2])
def test_interrupted_run_leaves_no_database(tmp_path, caffe_zoo, jobs):
    lst = write_list(tmp_path, ["cat.jpg 1"] * 3000)
    proc = subprocess.Popen(_cmd(caffe_zoo / ZOO, lst, tmp_path / "db", "--resize_width=300",
                                 "--resize_height=300", f"--jobs={jobs}"), stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert "A total of 3000 images" in proc.stderr.readline()
    deadline = time.monotonic() + 30
    while not leftovers(tmp_path) and time.monotonic() < deadline:  # the temporary database exists
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group, workers included
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert not (tmp_path / "db").exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_two_processes_are_faster_than_one(tmp_path):
    """Throughput with --jobs 2 vs --jobs 1 on 300 generated 256×256 JPEGs (needs 2 idle cores)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(300):
        small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        small.resize((256, 256), Image.BILINEAR).save(tmp_path / "img" / f"{i}.jpg", quality=90)
    lst = write_list(tmp_path, [f"{i}.jpg {i % 10}" for i in range(300)])
    rates = {}
    for jobs in (1, 2, 1, 2):
        out = tmp_path / f"db{jobs}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        t = time.monotonic()
        subprocess.run(_cmd(tmp_path / "img", lst, out, f"--jobs={jobs}", "--resize_width=227",
                            "--resize_height=227"), check=True, capture_output=True)
        rates[jobs] = max(rates.get(jobs, 0), 300 / (time.monotonic() - t))
    assert rates[2] > 1.3 * rates[1], rates
