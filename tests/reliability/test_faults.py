"""Data faults and untrusted files: corrupt records and truncated files name what broke,
missing paths give one line and a non-zero exit, a full disk keeps the previous
snapshot, weights never run code, and Python layers can be refused."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import numpy as np
import pytest
from killing import write_solver

import pipeline as caffe
from pipeline.commands import cli
from pipeline.data.datum import array_to_datum
from pipeline.errors import ConfigError, DataError, WriteError
from pipeline.formats import atomic
from pipeline.solvers import snapshot as snap

PKG = Path(caffe.__file__).resolve().parent


def _data_net(tmp_path, source, kind="Data", backend="LMDB"):
    param = (f'data_param {{ source: "{source}" backend: {backend} batch_size: 2 }}' if kind == "Data"
             else f'hdf5_data_param {{ source: "{source}" batch_size: 2 }}')
    path = tmp_path / "d.prototxt"
    path.write_text(f'layer {{ name: "d" type: "{kind}" top: "data" top: "label" {param} }}\n')
    return str(path)


def test_corrupt_lmdb_record_names_database_and_key(tmp_path):
    import lmdb

    db = tmp_path / "db"
    env = lmdb.open(str(db), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for i in range(4):
            value = array_to_datum(np.full((1, 2, 2), i, np.uint8), label=i).SerializeToString()
            txn.put(f"{i:08d}_x".encode(), value if i != 2 else b"\x0a\xff\xff\xff\x0f" + value[:3])
    env.close()
    net = caffe.Net(_data_net(tmp_path, db), caffe.TRAIN)
    net.forward()  # records 0, 1
    with pytest.raises(DataError) as e:
        net.forward()  # record 2 is garbage
    msg = str(e.value)
    assert "00000002_x" in msg and str(db) in msg and "not a Datum" in msg


def test_truncated_hdf5_data_file_names_the_file_and_layer(tmp_path):
    import h5py

    h5 = tmp_path / "train.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("data", data=np.arange(4000, dtype=np.float32).reshape(100, 40))
        f.create_dataset("label", data=np.arange(100, dtype=np.float32))
    raw = h5.read_bytes()
    h5.write_bytes(raw[: len(raw) - 8000])  # the data's tail is gone; the header is intact
    (tmp_path / "list.txt").write_text(f"{h5}\n")
    with pytest.raises(DataError) as e:
        net = caffe.Net(_data_net(tmp_path, tmp_path / "list.txt", kind="HDF5Data"), caffe.TRAIN)
        net.forward()
    assert str(h5) in str(e.value) and "truncated file" in str(e.value) and "layer 'd'" in str(e.value)


@pytest.mark.parametrize("argv", [
    ["train", "--solver", "/nonexistent/solver.prototxt"],
    ["test", "--model", "/nonexistent/net.prototxt", "--weights", "/nonexistent/w.caffemodel"],
    ["convert_imageset", "/nonexistent/", "/nonexistent/list.txt", "/nonexistent/db"],
    ["compute_image_mean", "/nonexistent/db"],
])
def test_missing_paths_give_one_line_and_a_nonzero_exit(argv, capsys):
    assert cli.main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "/nonexistent/" in err[-1] and "Traceback" not in "\n".join(err)


def test_a_directory_given_as_weights(tmp_path, capsys):
    net = tmp_path / "n.prototxt"
    net.write_text('input: "data" input_shape { dim: 1 dim: 2 }\n')
    assert cli.main(["test", "--model", str(net), "--weights", str(tmp_path), "--iterations", "1"]) == 1
    assert "is a directory" in capsys.readouterr().err


def test_disk_full_while_snapshotting_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    solver = caffe.get_solver(str(write_solver(tmp_path, "f", max_iter=4, snapshot=2)))
    solver.step(2)  # writes f_iter_2
    good = {p.name: p.read_bytes() for p in tmp_path.iterdir() if "_iter_2" in p.name}
    assert len(good) == 3  # model, state, sidecar

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(WriteError) as e:
        solver.step(2)
    msg = str(e.value)
    assert "iteration 4" in msg and "No space left on device" in msg
    assert re.search(r"the previous snapshot .*f_iter_2\.solverstate is intact", msg)
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if "_iter_4" in n or n.endswith(".tmp")], names
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if "_iter_2" in p.name} == good
    assert snap.newest_complete(str(tmp_path / "f")) == str(tmp_path / "f_iter_2.solverstate")


# ------------------------------------------------------------------ untrusted
def test_no_pickle_and_torch_load_only_with_weights_only():
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.parent.name == "proto":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bimport pickle\b|\bpickle\.load|\bdill\b|\bjoblib\b|allow_pickle\s*=\s*True", code):
                offenders.append(f"{path}:{n}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{path}:{n}: {line.strip()}")
            if re.search(r"(?<![\w.])(eval|exec)\(", code):
                offenders.append(f"{path}:{n}: {line.strip()}")
    assert offenders == []


PY_NET = """name: "py"
input: "data" input_shape { dim: 1 dim: 2 }
layer { name: "evil" type: "Python" bottom: "data" top: "out" python_param { module: "os" layer: "system" } }
"""


def test_python_layers_can_be_refused(tmp_path, capsys):
    path = tmp_path / "py.prototxt"
    path.write_text(PY_NET)
    with pytest.raises(ConfigError, match=r"layer 'evil' is a Python layer, which would import and run module 'os'"):
        caffe.Net(str(path), caffe.TEST, python_layers=False)
    for cmd in (["test", "--model", str(path), "--weights", str(path), "--no-python-layers"],
                ["time", "--model", str(path), "-no_python_layers", "--iterations", "1"]):
        assert cli.main(cmd) == 1
        assert "Python layers are disabled (--no-python-layers" in capsys.readouterr().err
