"""MemoryData, HDF5Output and DummyData: arrays in and out, read back with h5py and numpy."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from layer_harness import make_layer, run

import pipeline as caffe
from pipeline.errors import ConfigError, DataError, ShapeError
from pipeline.proto import caffe_pb2


# --------------------------------------------------------------------- HDF5Output
def test_hdf5_output_appends_every_forward(tmp_path):
    out = tmp_path / "out.h5"
    layer, tops = make_layer(
        f'type: "HDF5Output" bottom: "a" bottom: "b" hdf5_output_param {{ file_name: "{out}" }}',
        [(2, 3), (2,)],
        num_tops=0,
    )
    assert tops == []
    a1, a2 = torch.arange(6.0).reshape(2, 3), -torch.arange(6.0).reshape(2, 3)
    assert run(layer, a1, torch.tensor([1.0, 2.0])) == []
    run(layer, a2, torch.tensor([3.0, 4.0]))
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["data"][()], np.concatenate([a1, a2]).reshape(4, 3, 1, 1))
        np.testing.assert_array_equal(f["label"][()], np.array([1, 2, 3, 4], np.float32).reshape(4, 1, 1, 1))
    with pytest.raises(ShapeError, match="same num"):
        make_layer(
            f'type: "HDF5Output" bottom: "a" bottom: "b" hdf5_output_param {{ file_name: "{out}" }}',
            [(2, 3), (3,)],
            num_tops=0,
        )
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


# ---------------------------------------------------------------------- MemoryData
def test_memory_data_with_set_input_arrays():
    from pipeline.formats.prototxt import parse_text

    net = caffe.Net(
        parse_text(
            """
      layer { name: "m" type: "MemoryData" top: "data" top: "label"
              memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } }
      layer { name: "s" type: "Silence" bottom: "label" }""",
            caffe_pb2.NetParameter(),
        ),
        caffe.TEST,
    )
    assert net.blobs["data"].shape == (2, 1, 2, 3) and net.blobs["label"].shape == (2, 1, 1, 1)
    data = np.arange(36, dtype=np.float64).reshape(6, 1, 2, 3)
    net.set_input_arrays(data, np.arange(6.0))
    got = [net.forward(blobs=["label"]) for _ in range(4)]  # 3 batches, then wraps
    for i, g in enumerate(got):
        j = (2 * i) % 6
        np.testing.assert_array_equal(g["data"], data[j : j + 2])
        np.testing.assert_array_equal(g["label"].ravel(), [j, j + 1])
    layer = net.module[net._layer_names.index("m")]
    assert layer.get_position() == {"type": "MemoryData", "pos": 2}
    with pytest.raises(ShapeError, match="must be a positive multiple of batch size"):
        net.set_input_arrays(data[:3], np.zeros(3))
    with pytest.raises(ShapeError, match="data array has wrong dimensions"):
        net.set_input_arrays(np.zeros((2, 1, 3, 2)), np.zeros(2))
    fresh, _ = make_layer(
        'type: "MemoryData" top: "d" top: "l" memory_data_param { batch_size: 1 channels: 1 height: 1 width: 1 }', []
    )
    with pytest.raises(DataError, match="needs to be initialized by calling set_input_arrays"):
        run(fresh)
    with pytest.raises(ConfigError, match="must be specified and positive"):
        make_layer('type: "MemoryData" top: "d" top: "l" memory_data_param { batch_size: 1 }', [])


def test_dummy_data_in_a_net_is_repeatable_under_set_random_seed():
    from pipeline.formats.prototxt import parse_text

    text = """layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 2 dim: 3 }
              data_filler { type: "gaussian" std: 1 } } }"""
    outs = []
    for _ in range(2):
        caffe.set_random_seed(3)
        net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN)
        outs.append(net.forward()["x"].copy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].shape == (2, 3) and outs[0].std() > 0
