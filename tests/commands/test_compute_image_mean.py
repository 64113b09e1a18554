"""compute_image_mean: the BlobProto it writes equals the numpy mean of the database's images."""

from __future__ import annotations

import lmdb
import numpy as np
import pytest
from PIL import Image

from pipeline.commands import cli
from pipeline.proto import caffe_pb2


def run(tool, argv, capsys):
    code = cli.run_command(tool, cli.TOOLS[tool], [str(a) for a in argv])
    return code, capsys.readouterr().err


def write_lmdb(path, values):
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, v in enumerate(values):
            txn.put(f"{i:08d}".encode(), v)
    env.close()


def raw_datum(arr):
    d = caffe_pb2.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2], data=arr.tobytes(), label=1)
    return d.SerializeToString()


def read_mean(path):
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(path.read_bytes())
    shape = (blob.num, blob.channels, blob.height, blob.width)
    return shape, np.asarray(blob.data, np.float32).reshape(shape)


def test_mean_of_raw_datums_equals_numpy_mean(tmp_path, capsys):
    imgs = np.random.default_rng(0).integers(0, 256, (37, 3, 5, 7), dtype=np.uint8)
    write_lmdb(tmp_path / "db", [raw_datum(a) for a in imgs])
    code, err = run("compute_image_mean", [tmp_path / "db", tmp_path / "mean.binaryproto"], capsys)
    assert code == 0, err
    shape, mean = read_mean(tmp_path / "mean.binaryproto")
    expected = imgs.astype(np.float64).mean(axis=0)
    assert shape == (1, 3, 5, 7)
    assert np.array_equal(mean[0], expected.astype(np.float32))
    assert "Number of channels: 3" in err
    for c in range(3):
        assert f"mean_value channel [{c}]: {expected[c].mean():.6g}" in err


def test_mean_of_a_converted_imageset_with_encoded_and_gray(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rgbs = rng.integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
    lines = []
    for i, rgb in enumerate(rgbs):
        Image.fromarray(rgb).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png {i}\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    assert run("convert_imageset", [f"{tmp_path}/", tmp_path / "list.txt", tmp_path / "enc", "--encoded"],
               capsys)[0] == 0
    code, err = run("compute_image_mean", [tmp_path / "enc", tmp_path / "m.binaryproto"], capsys)
    assert code == 0, err
    _, mean = read_mean(tmp_path / "m.binaryproto")
    bgr = rgbs[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float64)
    assert np.array_equal(mean[0], bgr.mean(axis=0).astype(np.float32))
    assert run("convert_imageset", [f"{tmp_path}/", tmp_path / "list.txt", tmp_path / "gray", "--gray"],
               capsys)[0] == 0
    code, err = run("compute_image_mean", ["--backend=lmdb", tmp_path / "gray"], capsys)  # no output file
    assert code == 0 and "Number of channels: 1" in err and "Write to" not in err
    assert [p.name for p in tmp_path.glob("*.binaryproto")] == ["m.binaryproto"]


def test_mean_of_float_datums(tmp_path, capsys):
    vals = np.random.default_rng(2).normal(size=(5, 2, 3, 4)).astype(np.float32)
    recs = []
    for v in vals:
        d = caffe_pb2.Datum(channels=2, height=3, width=4)
        d.float_data.extend(v.ravel().tolist())
        recs.append(d.SerializeToString())
    write_lmdb(tmp_path / "f", recs)
    assert run("compute_image_mean", [tmp_path / "f", tmp_path / "m"], capsys)[0] == 0
    _, mean = read_mean(tmp_path / "m")
    assert np.allclose(mean[0], vals.astype(np.float64).mean(axis=0), atol=1e-6)


def test_bad_databases_are_errors_naming_what(tmp_path, capsys):
    a = np.zeros((3, 4, 4), np.uint8)
    b = np.zeros((3, 5, 4), np.uint8)
    write_lmdb(tmp_path / "mixed", [raw_datum(a), raw_datum(b)])
    code, err = run("compute_image_mean", [tmp_path / "mixed", tmp_path / "m"], capsys)
    assert code == 1 and "record '00000001' is 3x5x4" in err and not (tmp_path / "m").exists()
    write_lmdb(tmp_path / "corrupt", [raw_datum(a), b"\xff\xff\xff"])
    code, err = run("compute_image_mean", [tmp_path / "corrupt"], capsys)
    assert code == 1 and "record '00000001': not a Datum" in err
    write_lmdb(tmp_path / "empty", [])
    code, err = run("compute_image_mean", [tmp_path / "empty"], capsys)
    assert code == 1 and "empty" in err
    code, err = run("compute_image_mean", [tmp_path / "nowhere"], capsys)
    assert code == 1 and "nowhere: no such database" in err


@pytest.mark.parametrize("existing", [True, False])
def test_output_is_written_atomically_with_a_note_when_replaced(tmp_path, capsys, existing):
    write_lmdb(tmp_path / "db", [raw_datum(np.full((1, 2, 2), 9, np.uint8))])
    out = tmp_path / "mean.binaryproto"
    if existing:
        out.write_bytes(b"old")
    code, err = run("compute_image_mean", [tmp_path / "db", out], capsys)
    assert code == 0 and ("replacing the existing" in err) == existing
    assert np.array_equal(read_mean(out)[1], np.full((1, 1, 2, 2), 9, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "mean.binaryproto"]
