"""Snapshots in Caffe's layout, exact resume, and finetuning from weights."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch
from solver_files import TINY, files_fixture  # noqa: F401  (provides the `files` fixture)

import pipeline as caffe
from pipeline.errors import ShapeError
from pipeline.formats import binary
from pipeline.formats.blob import blobproto_to_array
from pipeline.proto import caffe_pb2
from pipeline.solvers import snapshot as snap


def params_of(solver):
    return [p.detach().numpy().copy() for p in solver.net.learnable_params]


def history_of(solver):
    return [h.numpy().copy() for h in solver.history]


def field_numbers(buf: bytes) -> list[int]:
    """Top-level field numbers of a serialized message, in wire order."""
    out, pos = [], 0
    while pos < len(buf):
        tag = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            tag |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        num, wire = tag >> 3, tag & 7
        out.append(num)
        if wire == 0:
            while buf[pos] & 0x80:
                pos += 1
            pos += 1
        elif wire == 2:
            length = shift = 0
            while True:
                b = buf[pos]
                pos += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            pos += length
        else:
            pos += 8 if wire == 1 else 4
    return out


# ----------------------------------------------------------------- resume
CASES = {
    "sgd-multistep": dict(),
    "adam-hdf5": dict(type="Adam", momentum=0.9, base_lr=0.01, snapshot_format=caffe_pb2.SolverParameter.HDF5),
    "nesterov-itersize-clip": dict(type="Nesterov", iter_size=2, clip_gradients=0.5, lr_policy="step", stepsize=4),
    "adadelta-L1": dict(type="AdaDelta", momentum=0.95, delta=1e-6, base_lr=1.0, regularization_type="L1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_n_plus_n_equals_2n_bit_exact(files, case):
    path = files.solver(**CASES[case])
    straight = caffe.get_solver(str(path))
    straight.step(10)

    first = caffe.get_solver(str(path))
    first.step(5)
    _, state = first.snapshot()
    assert os.path.exists(snap.sidecar_path(state))
    resumed = caffe.get_solver(str(path))
    resumed.restore(state)
    assert resumed.iter == 5
    resumed.step(5)

    assert resumed.iter == straight.iter == 10
    assert resumed.current_step == straight.current_step
    for a, b in zip(params_of(resumed), params_of(straight)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(history_of(resumed), history_of(straight)):
        np.testing.assert_array_equal(a, b)


def test_without_the_sidecar_state_resumes_but_data_and_dropout_start_fresh(files):
    path = files.solver()
    straight = caffe.get_solver(str(path))
    straight.step(6)
    first = caffe.get_solver(str(path))
    first.step(3)
    _, state = first.snapshot()
    os.remove(snap.sidecar_path(state))
    resumed = caffe.get_solver(str(path))
    resumed.restore(state)
    assert (resumed.iter, resumed.current_step) == (3, 0)  # stepvalue 3 is reached by the 4th update
    np.testing.assert_array_equal(history_of(resumed)[0], history_of(first)[0])
    resumed.step(3)
    assert not np.array_equal(params_of(resumed)[0], params_of(straight)[0])


def test_solverstate_has_caffes_layout_field_by_field(files):
    solver = caffe.get_solver(str(files.solver()))
    solver.step(4)
    model, state_path = solver.snapshot()
    prefix = str(files.root / "snap" / "tiny")
    assert (model, state_path) == (f"{prefix}_iter_4.caffemodel", f"{prefix}_iter_4.solverstate")
    raw = open(state_path, "rb").read()
    n = len(solver.net.learnable_params)
    assert field_numbers(raw) == [1, 2] + [3] * n + [4]  # iter, learned_net, history..., current_step
    state = caffe_pb2.SolverState.FromString(raw)
    assert state.iter == 4
    assert state.learned_net == model
    assert state.current_step == 1  # stepvalue 3 passed
    shapes = [tuple(p.shape) for p in solver.net.learnable_params]
    assert shapes == [(5, 3), (5,), (3, 5), (3,)]  # ip1 weight and bias, ip2 weight and bias
    for h, shape, mine in zip(state.history, shapes, solver.history):
        assert tuple(h.shape.dim) == shape
        assert not (h.HasField("num") or h.HasField("channels") or h.diff or h.double_data)
        assert field_numbers(h.SerializeToString()) == [5, 7]  # packed data, then shape
        np.testing.assert_array_equal(np.array(h.data, np.float32).reshape(shape), mine.numpy())
    # the .caffemodel holds the train net's weights by layer
    net = binary.read_caffemodel(model)
    blobs = {lp.name: [blobproto_to_array(b) for b in lp.blobs] for lp in net.layer if lp.blobs}
    np.testing.assert_array_equal(blobs["ip1"][0], solver.net.params["ip1"][0].data)
    np.testing.assert_array_equal(blobs["ip2"][0], solver.net.params["ip2"][0].data)


def test_adam_state_has_two_history_blobs_per_param_moments_last(files):
    solver = caffe.get_solver(str(files.solver(type="Adam")))
    solver.step(2)
    _, path = solver.snapshot()
    state = caffe_pb2.SolverState.FromString(open(path, "rb").read())
    n = len(solver.net.learnable_params)
    assert len(state.history) == 2 * n
    for i, p in enumerate(solver.net.learnable_params):
        assert tuple(state.history[i].shape.dim) == tuple(state.history[n + i].shape.dim) == tuple(p.shape)
    v = np.array(state.history[n].data)
    assert (v >= 0).all() and v.any()  # second moments


def test_hdf5_snapshot_layout(files):
    solver = caffe.get_solver(str(files.solver(snapshot_format=caffe_pb2.SolverParameter.HDF5, snapshot_diff=True)))
    solver.step(3)
    model, state = solver.snapshot()
    assert model.endswith("_iter_3.caffemodel.h5") and state.endswith("_iter_3.solverstate.h5")
    with h5py.File(state, "r") as f:
        assert int(f["iter"][()]) == 3 and int(f["current_step"][()]) == 0
        assert f["learned_net"][()].decode() == model
        assert sorted(f["history"].keys(), key=int) == [str(i) for i in range(4)]
        np.testing.assert_array_equal(f["history/0"][()], solver.history[0].numpy())
    with h5py.File(model, "r") as f:
        np.testing.assert_array_equal(f["data/ip1/0"][()], solver.net.params["ip1"][0].data)
        np.testing.assert_array_equal(f["diff/ip1/0"][()], solver.net.params["ip1"][0].diff)  # snapshot_diff


def test_snapshot_diff_holds_the_last_update(files):
    solver = caffe.get_solver(str(files.solver(snapshot_diff=True)))
    solver.step(2)
    model, _ = solver.snapshot()
    lp = {lp.name: lp for lp in binary.read_caffemodel(model).layer}["ip1"]
    diff = np.array(lp.blobs[0].diff, np.float32).reshape(5, 3)
    np.testing.assert_array_equal(diff, solver.history[0].numpy())  # SGD: the update is the history


def test_restore_checks_history_count_and_shapes(files):
    sgd = caffe.get_solver(str(files.solver()))
    sgd.step(1)
    _, state = sgd.snapshot()
    adam = caffe.get_solver(str(files.solver(type="Adam", name="adam.prototxt")))
    with pytest.raises(ShapeError, match="Incorrect length of history blobs: the state has 4, this solver needs 8"):
        adam.restore(state)


def test_restore_finds_the_model_beside_the_state_when_run_elsewhere(files, tmp_path, monkeypatch):
    solver = caffe.get_solver(str(files.solver(snapshot_prefix="snap/tiny")))
    monkeypatch.chdir(files.root)
    solver.step(2)
    _, state = solver.snapshot()  # learned_net is the relative "snap/tiny_iter_2.caffemodel"
    monkeypatch.chdir(files.root / "snap")
    other = caffe.get_solver(str(files.root / "solver.prototxt"))
    other.restore(str(files.root / state))
    np.testing.assert_array_equal(params_of(other)[0], params_of(solver)[0])


# --------------------------------------------------------------- finetune
def test_finetune_from_weights_with_a_renamed_layer_and_a_frozen_one(files):
    source = caffe.get_solver(str(files.solver()))
    source.step(3)
    model, _ = source.snapshot()
    trained_ip1 = [b.data.copy() for b in source.net.params["ip1"]]

    text = TINY.replace('name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"',
                        'name: "ip2_new" type: "InnerProduct" bottom: "ip1" top: "ip2"')
    text = text.replace('weight_filler { type: "xavier" } } }\nlayer { name: "loss"',
                        'weight_filler { type: "constant" value: 0.5 } } }\nlayer { name: "loss"')
    text = text.replace("param { lr_mult: 1 } param { lr_mult: 2 }", "param { lr_mult: 0 } param { lr_mult: 0 }")
    net = files.net(text, "finetune.prototxt")
    tuned = caffe.get_solver(str(files.solver(net_path=net, name="finetune_solver.prototxt", weights=[model])))
    for a, b in zip(tuned.net.params["ip1"], trained_ip1):
        np.testing.assert_array_equal(a.data, b)
    np.testing.assert_array_equal(tuned.net.params["ip2_new"][0].data, np.full((3, 5), 0.5, np.float32))
    np.testing.assert_array_equal(tuned.test_nets[0].params["ip1"][0].data, trained_ip1[0])
    tuned.step(3)
    for a, b in zip(tuned.net.params["ip1"], trained_ip1):
        np.testing.assert_array_equal(a.data, b)  # lr_mult 0: frozen, weight decay notwithstanding
    assert not np.array_equal(tuned.net.params["ip2_new"][0].data, np.full((3, 5), 0.5, np.float32))


def test_finetune_shape_mismatch_names_the_layer_and_both_shapes(files):
    source = caffe.get_solver(str(files.solver()))
    model, _ = source.snapshot()
    net = files.net(TINY.replace("num_output: 5", "num_output: 6"), "wide.prototxt")
    with pytest.raises(ShapeError) as e:
        caffe.get_solver(str(files.solver(net_path=net, name="wide_solver.prototxt", weights=[model])))
    msg = str(e.value)
    assert "'ip1'" in msg and "5 3 (15)" in msg and "6 3 (18)" in msg and "rename the layer" in msg


def test_weights_argument_takes_a_comma_list_in_order(files):
    a = caffe.get_solver(str(files.solver()))
    a.step(1)
    first, _ = a.snapshot()
    a.step(1)
    second, _ = a.snapshot()
    b = caffe.get_solver(str(files.solver()), weights=f"{first}, {second}")
    np.testing.assert_array_equal(b.net.params["ip1"][0].data, a.net.params["ip1"][0].data)  # the last wins
    assert torch.equal(b.net.learnable_params[0], a.net.learnable_params[0])


# --------------------------------------------------- data layers resume too
def test_resume_is_exact_with_a_prefetching_data_layer(files):
    import lmdb

    rng = np.random.default_rng(0)
    env = lmdb.open(str(files.root / "db"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(23):  # not a multiple of the batch: the epoch wraps mid-batch
            img = rng.integers(0, 256, (1, 8, 8), dtype=np.uint8)
            d = caffe_pb2.Datum(channels=1, height=8, width=8, data=img.tobytes(), label=int(i % 3))
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()
    data = (f'layer {{ name: "data" type: "Data" top: "data" top: "label" data_param {{ source: "{files.root / "db"}" '
            'batch_size: 4 backend: LMDB } transform_param { crop_size: 6 mirror: true scale: 0.0039 } }')
    text = TINY.split("\n", 1)[0] + "\n" + data + "\n" + TINY.split("\n", 4)[4]
    path = files.solver(net_path=files.net(text, "db_net.prototxt"), name="db_solver.prototxt", test_interval=3)
    straight = caffe.get_solver(str(path))
    straight.step(8)
    first = caffe.get_solver(str(path))
    first.step(4)
    _, state = first.snapshot()
    first.step(2)  # reads on: the snapshot must hold the position at iteration 4
    resumed = caffe.get_solver(str(path))
    resumed.restore(state)
    resumed.step(4)
    for a, b in zip(params_of(resumed), params_of(straight)):
        np.testing.assert_array_equal(a, b)
