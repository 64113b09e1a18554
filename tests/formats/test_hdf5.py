"""HDF5 weights and solver states in Caffe's layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pipeline.errors import ParseError
from pipeline.formats import hdf5


def test_weights_layout_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    layers = [
        ("conv1", [rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)]),
        ("relu1", []),
        ("inception_3a/1x1", [rng.standard_normal((2, 4, 1, 1))]),
    ]
    p = tmp_path / "w.caffemodel.h5"
    hdf5.write_weights(p, layers, diffs={"conv1": [np.ones((4, 3, 3, 3)), np.ones(4)]})
    with h5py.File(p, "r") as f:  # Caffe's layout, read with plain h5py
        assert f["data/conv1/0"].shape == (4, 3, 3, 3) and f["data/conv1/0"].dtype == np.float32
        assert f["data/conv1/1"].shape == (4,)
        assert "data/relu1" in f and len(f["data/relu1"]) == 0
        assert f["data/inception_3a/1x1/0"].shape == (2, 4, 1, 1)
        assert np.all(f["diff/conv1/0"][()] == 1)
    back = hdf5.read_weights(p)
    assert set(back) == {"conv1", "relu1", "inception_3a/1x1"}
    for name, blobs in layers:
        assert len(back[name]) == len(blobs)
        for a, b in zip(back[name], blobs):
            assert np.array_equal(a, b.astype(np.float32))
    assert [a.shape for a in hdf5.read_weights(p, "diff")["conv1"]] == [(4, 3, 3, 3), (4,)]


def test_solver_state_round_trip(tmp_path):
    p = tmp_path / "s.solverstate.h5"
    hist = [np.full((2, 3), 0.5, np.float32), np.arange(3, dtype=np.float32)]
    hdf5.write_solver_state(p, 77, "x_iter_77.caffemodel.h5", hist, current_step=3)
    st = hdf5.read_solver_state(p)
    assert (st["iter"], st["learned_net"], st["current_step"]) == (77, "x_iter_77.caffemodel.h5", 3)
    assert all(np.array_equal(a, b) for a, b in zip(st["history"], hist))


def test_bad_hdf5_files(tmp_path):
    p = tmp_path / "not.h5"
    p.write_bytes(b"definitely not hdf5")
    with pytest.raises(ParseError, match="not.h5: not a readable HDF5 file"):
        hdf5.read_weights(p)
    q = tmp_path / "nodata.h5"
    with h5py.File(q, "w") as f:
        f.create_group("weights")
    with pytest.raises(ParseError, match="no '/data' group"):
        hdf5.read_weights(q)
    with pytest.raises(ParseError, match="not a Caffe HDF5 solver state"):
        hdf5.read_solver_state(q)
