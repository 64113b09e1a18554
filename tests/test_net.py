"""The Net: construction rules, in-place blobs, sharing, losses, forward/backward, weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import pipeline as caffe
from pipeline.errors import ConfigError, GraphError, ShapeError, UnknownTypeError
from pipeline.formats import binary
from pipeline.proto import caffe_pb2


def net_param(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


SMALL = """
name: "small"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 stride: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def small_net(**kw):
    torch.manual_seed(0)
    return caffe.Net(net_param(SMALL), caffe.TEST, **kw)


# ----------------------------------------------------------------- building
STAGED = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "train_only" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "x" top: "a" include { phase: TEST } }
layer { name: "deploy" type: "TanH" bottom: "a" top: "b" include { stage: "deploy" } }
layer { name: "not_deploy" type: "Sigmoid" bottom: "a" top: "b" exclude { stage: "deploy" } }
layer { name: "level2" type: "AbsVal" bottom: "b" top: "c" include { min_level: 2 } }
layer { name: "either" type: "Power" bottom: "b" top: "d" include { phase: TRAIN } include { stage: "s" } }
"""


@pytest.mark.parametrize(
    "phase, level, stages, expected",
    [
        (caffe.TRAIN, 0, [], ["in", "train_only", "not_deploy", "either"]),
        (caffe.TEST, 0, [], ["in", "test_only", "not_deploy"]),
        (caffe.TEST, 0, ["deploy"], ["in", "test_only", "deploy"]),
        (caffe.TEST, 2, ["s"], ["in", "test_only", "not_deploy", "level2", "either"]),
    ],
)
def test_state_rules_filter_layers_as_caffe(phase, level, stages, expected):
    net = caffe.Net(net_param(STAGED), phase, level=level, stages=stages)
    assert net._layer_names == expected


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(ConfigError, match="layer 'r' specifies both include and exclude"):
        caffe.Net(net_param('layer { name: "r" type: "ReLU" include { phase: TRAIN } exclude { phase: TEST } }'),
                  caffe.TRAIN)


def test_graph_errors_name_layer_blob_and_index():
    with pytest.raises(GraphError, match=r"Unknown bottom blob 'x' \(layer 'conv2', bottom index 0\)"):
        caffe.Net(net_param('layer { name: "conv2" type: "ReLU" bottom: "x" top: "y" }'), caffe.TEST)
    dup = SMALL + 'layer { name: "again" type: "ReLU" bottom: "data" top: "pool" }'
    with pytest.raises(GraphError, match="Top blob 'pool' produced by multiple sources"):
        caffe.Net(net_param(dup), caffe.TEST)


def test_unknown_layer_type_suggests_and_names_forks():
    bad = SMALL.replace('type: "ReLU"', 'type: "Relu"')
    with pytest.raises(UnknownTypeError, match=r"unknown layer type 'Relu' \(layer 'relu'.*did you mean 'ReLU'"):
        caffe.Net(net_param(bad), caffe.TEST)
    fork = SMALL + 'layer { name: "rg" type: "Region" bottom: "conv" top: "rg" }'  # YOLO: not supported
    with pytest.raises(UnknownTypeError, match="Region' comes from a YOLO Caffe port"):
        caffe.Net(net_param(fork), caffe.TEST)


def test_arity_errors_name_the_layer():
    with pytest.raises(ConfigError, match="Concat layer 'c' takes at least 1 bottom"):
        caffe.Net(net_param('layer { name: "c" type: "Concat" top: "y" }'), caffe.TEST)


def test_legacy_input_dim_net_builds():
    net = caffe.Net(net_param('input: "data" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3\n'
                              'layer { name: "r" type: "ReLU" bottom: "data" top: "out" }'), caffe.TEST)
    assert net.inputs == ["data"] and net.blobs["out"].shape == (1, 2, 3, 3)


# ----------------------------------------------------------------- blobs & forward
def test_in_place_blob_holds_the_in_place_output():
    net = small_net()
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    net.blobs["data"].data[...] = x  # written before forward: takes effect
    net.forward()
    w, b = net.params["conv"][0].data, net.params["conv"][1].data
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(net.blobs["conv"].data, np.maximum(ref, 0), rtol=1e-5, atol=1e-6)
    assert list(net.blobs) == ["data", "conv", "pool", "ip", "prob"]


def test_forward_returns_outputs_and_keyword_inputs_reshape():
    net = small_net()
    x = np.ones((4, 3, 5, 5), np.float32)
    out = net.forward(data=x)
    assert list(out) == ["prob"] and out["prob"].shape == (4, 3)
    np.testing.assert_allclose(out["prob"].sum(1), 1, rtol=1e-6)
    assert net.blobs["ip"].shape == (4, 3)


def test_forward_start_end_and_extra_blobs():
    net = small_net()
    net.forward(data=np.ones((2, 3, 5, 5), np.float32))
    full = net.blobs["prob"].data.copy()
    net.blobs["ip"].data[...] = 0  # restart from ip's consumer with ip zeroed
    out = net.forward(start="prob")
    np.testing.assert_allclose(out["prob"], np.full((2, 3), 1 / 3), rtol=1e-6)
    out = net.forward(end="pool", blobs=["data"])
    assert set(out) == {"pool", "data"}
    assert not np.allclose(full, 1 / 3)


def test_blob_reshape_then_net_reshape():
    net = small_net()
    net.blobs["data"].reshape(5, 3, 5, 5)
    net.reshape()
    assert net.blobs["pool"].data.shape == (5, 4, 2, 2) and net.blobs["prob"].data.shape == (5, 3)
    assert (net.blobs["data"].num, net.blobs["data"].channels, net.blobs["data"].count) == (5, 3, 375)
    net.blobs["data"].reshape(1, 3, 7, 7)  # the inner product cannot take 4x4x4: Caffe's check
    with pytest.raises(ShapeError, match="InnerProduct layer 'ip'"):
        net.reshape()


def test_pycaffe_names():
    net = small_net()
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert [l.type for l in net.layers] == ["Input", "Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    assert net.layer_dict["conv"].blobs[0].data.shape == (4, 3, 3, 3)
    assert net.top_names["relu"] == ["conv"] and net.bottom_names["ip"] == ["pool"]
    assert [p.data.shape for p in net.params["ip"]] == [(3, 16), (3,)]
    net.params["ip"][1].data[...] = 7.0  # pycaffe-style weight surgery
    assert torch.all(net.module[4].blobs[1] == 7.0)


# ----------------------------------------------------------------- backward
def _numeric_input_grad(net, x, out_diff, eps=1e-3):
    g = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = (net.forward(data=x)["prob"].astype(np.float64) * out_diff).sum()
        flat[i] = old - eps
        minus = (net.forward(data=x)["prob"].astype(np.float64) * out_diff).sum()
        flat[i] = old
        g.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return g


def test_input_gradient_of_deploy_net_with_force_backward_matches_finite_differences():
    net = small_net()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    out_diff = rng.standard_normal((2, 3)).astype(np.float32)
    net.forward(data=x)
    grads = net.backward(prob=out_diff)
    assert list(grads) == ["data"]
    analytic = grads["data"].copy()
    numeric = _numeric_input_grad(net, x.copy(), out_diff)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-2, atol=1e-4)
    assert np.abs(analytic).max() > 1e-3


def test_no_force_backward_means_zero_input_diff():
    param = net_param(SMALL)
    param.force_backward = False
    net = caffe.Net(param, caffe.TEST)
    net.forward(data=np.ones((2, 3, 5, 5), np.float32))
    grads = net.backward(prob=np.eye(2, 3, dtype=np.float32))
    assert np.all(grads["data"] == 0)
    assert np.abs(net.params["ip"][0].diff).sum() > 1e-3  # params still get their diffs  # params still get their diffs


LOSSNET = """
layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
layer { name: "aux" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "aux" loss_weight: 0.5 }
layer { name: "quiet" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "quiet" loss_weight: 0 }
"""


def test_loss_weights_default_one_explicit_and_zero():
    torch.manual_seed(0)
    net = caffe.Net(net_param(LOSSNET), caffe.TRAIN)
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    net.forward(x=x, t=t)
    w = net.params["ip"][0].data.astype(np.float64)
    b = net.params["ip"][1].data.astype(np.float64)
    y = x @ w.T + b
    per = ((y - t) ** 2).sum() / 8
    assert float(net.blobs["loss"].data) == pytest.approx(per, rel=1e-5)
    assert float(net.loss().detach()) == pytest.approx(1.5 * per, rel=1e-5)  # 1 + 0.5 + 0
    net.backward()
    expected = 1.5 * ((y - t) / 4).T @ x
    np.testing.assert_allclose(net.params["ip"][0].diff, expected, rtol=1e-4, atol=1e-6)
    assert float(net.blobs["aux"].diff) == 0.5  # Caffe keeps the loss weight in the top's diff


def test_propagate_down_false_stops_the_gradient():
    text = LOSSNET.replace('bottom: "y" bottom: "t" top: "loss" }',
                           'bottom: "y" bottom: "t" top: "loss" propagate_down: false propagate_down: true }')
    text = text.replace('loss_weight: 0.5', 'loss_weight: 0')
    net = caffe.Net(net_param(text), caffe.TRAIN)
    net.forward(x=np.ones((4, 3), np.float32), t=np.zeros((4, 3), np.float32))
    net.backward()
    assert np.all(net.params["ip"][0].diff == 0)


def test_lr_mult_zero_means_no_gradient_and_mults_are_kept():
    text = LOSSNET.replace('name: "ip" type: "InnerProduct" bottom: "x" top: "y"',
                           'name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                           'param { lr_mult: 0 } param { lr_mult: 2 decay_mult: 0 }')
    net = caffe.Net(net_param(text), caffe.TRAIN)
    assert net.lr_mults == [0.0, 2.0] and net.decay_mults == [1.0, 0.0]
    assert not net.learnable_params[0].requires_grad and net.learnable_params[1].requires_grad


# ----------------------------------------------------------------- sharing
SHARED = """
layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "fa" param { name: "w" lr_mult: 1 } param { name: "bias" }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "fb" param { name: "w" } param { name: "bias" }
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fa" bottom: "fb" top: "loss" }
"""


def test_shared_params_are_one_tensor_with_summed_gradients():
    net = caffe.Net(net_param(SHARED), caffe.TRAIN)
    assert net.module[1].blobs[0] is net.module[2].blobs[0]
    assert len(net.learnable_params) == 2
    a = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    b = np.array([[0, 0, 1], [1, 1, 1]], np.float32)
    net.forward(a=a, b=b)
    net.backward()
    w = net.params["ipa"][0].data.astype(np.float64)
    d = (a - b) @ w.T / 2  # d loss / d fa
    expected = d.T @ a - d.T @ b  # both uses of the one weight add up
    np.testing.assert_allclose(net.params["ipa"][0].diff, expected, rtol=1e-5, atol=1e-6)


def test_sharing_shape_mismatch_and_permissive():
    strict = SHARED.replace("inner_product_param { num_output: 2 } }", "inner_product_param { num_output: 5 } }")
    with pytest.raises(ShapeError, match="Cannot share param 'w' owned by layer 'ipa' with layer 'ipb'; shape mismatch"):
        caffe.Net(net_param(strict), caffe.TRAIN)
    perm = SHARED.replace('param { name: "w" } param { name: "bias" }',
                          'param { name: "w" share_mode: PERMISSIVE } param { name: "bias" }')
    perm = perm.replace('inner_product_param { num_output: 2 } }',
                        'inner_product_param { num_output: 2 transpose: true } }')
    net = caffe.Net(net_param(perm), caffe.TRAIN)
    wa = net.params["ipa"][0].data
    assert net.module[2].blobs[0].shape == (3, 2)
    np.testing.assert_array_equal(net.module[2].blobs[0].detach().numpy().ravel(), wa.ravel())


def test_mismatched_lr_mult_on_shared_param_is_an_error():
    bad = SHARED.replace('param { name: "w" } param { name: "bias" }\n        inner_product_param { num_output: 2 } }',
                         'param { name: "w" lr_mult: 3 } param { name: "bias" }\n'
                         '        inner_product_param { num_output: 2 } }')
    with pytest.raises(ConfigError, match="Shared param 'w' has mismatched lr_mult"):
        caffe.Net(net_param(bad), caffe.TRAIN)


# ----------------------------------------------------------------- weights
def test_save_copy_from_round_trip_is_bit_exact(tmp_path):
    a = small_net()
    path = tmp_path / "small.caffemodel"
    a.save(str(path))
    torch.manual_seed(123)
    b = caffe.Net(net_param(SMALL), caffe.TEST)
    assert not np.array_equal(a.params["conv"][0].data, b.params["conv"][0].data)
    b.copy_from(str(path))
    for name in a.params:
        for pa, pb in zip(a.params[name], b.params[name]):
            assert np.array_equal(pa.data, pb.data)
    # The file is a full NetParameter Caffe reads: the net definition plus blobs.
    saved = binary.read_caffemodel(path)
    assert [l.name for l in saved.layer] == a._layer_names
    assert len(saved.layer[1].blobs) == 2 and list(saved.layer[1].blobs[0].shape.dim) == [4, 3, 3, 3]
    path2 = tmp_path / "again.caffemodel"
    b.save(str(path2))
    assert path2.read_bytes() == path.read_bytes()


def test_weights_argument_and_hdf5_round_trip(tmp_path):
    a = small_net()
    h5 = tmp_path / "w.caffemodel.h5"
    a.save_hdf5(str(h5))
    b = caffe.Net(net_param(SMALL), str(h5), caffe.TEST)
    for name in a.params:
        for pa, pb in zip(a.params[name], b.params[name]):
            assert np.array_equal(pa.data, pb.data)


def test_copy_from_shape_mismatch_says_rename(tmp_path):
    a = small_net()
    path = tmp_path / "src.caffemodel"
    a.save(str(path))
    other = net_param(SMALL.replace("num_output: 3", "num_output: 5"))
    b = caffe.Net(other, caffe.TEST)
    with pytest.raises(ShapeError) as ei:
        b.copy_from(str(path))
    msg = str(ei.value)
    assert "Cannot copy param 0 weights from layer 'ip'; shape mismatch" in msg
    assert "Source param shape is 3 16 (48)" in msg and "target param shape is 5 16 (80)" in msg
    assert "rename the layer" in msg


def test_renamed_layer_is_left_alone_and_legacy_4d_blobs_match(tmp_path):
    a = small_net()
    proto = caffe_pb2.NetParameter()
    lay = proto.layer.add(name="ip", type="InnerProduct")
    w = np.arange(48, dtype=np.float32).reshape(3, 16)
    legacy = lay.blobs.add()
    legacy.num, legacy.channels, legacy.height, legacy.width = 1, 1, 3, 16
    legacy.data.extend(w.ravel().tolist())
    lay.blobs.add().data.extend([1.0, 2.0, 3.0])
    lay.blobs[1].shape.dim.append(3)
    proto.layer.add(name="not_in_net", type="ReLU")
    path = tmp_path / "legacy.caffemodel"
    binary.write_binary(proto, path)
    before = a.params["conv"][0].data.copy()
    a.copy_from(str(path))
    assert np.array_equal(a.params["ip"][0].data, w)
    assert np.array_equal(a.params["conv"][0].data, before)


def test_share_with_uses_the_same_tensors():
    a, b = small_net(), caffe.Net(net_param(SMALL), caffe.TEST)
    b.share_with(a)
    a.params["ip"][0].data[...] = 0.25
    assert np.all(b.params["ip"][0].data == 0.25)


# ----------------------------------------------------------------- python layers
def test_python_layer_trains_linreg_loss_down(caffe_zoo):
    torch.manual_seed(0)
    net = caffe.Net(str(caffe_zoo / "BVLC__caffe/examples/pycaffe/linreg.prototxt"), caffe.TRAIN)
    losses = []
    for _ in range(40):
        net.forward()
        losses.append(float(net.blobs["loss"].data[0]))
        net.backward()
        for blobs in net.params.values():
            for p in blobs:
                p.data[...] -= 0.1 * p.diff
                p.diff[...] = 0
    assert losses[-1] < 0.05 * losses[0]


def test_python_layer_gradients_match_the_builtin_loss():
    text = LOSSNET.replace('type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }',
                           'type: "Python" bottom: "y" bottom: "t" top: "loss" loss_weight: 1 '
                           'python_param { module: "pyloss" layer: "EuclideanLossLayer" } }')
    torch.manual_seed(0)
    py = caffe.Net(net_param(text), caffe.TRAIN)
    torch.manual_seed(0)
    ref = caffe.Net(net_param(LOSSNET), caffe.TRAIN)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    for n in (py, ref):
        n.forward(x=x, t=t)
        n.backward()
    assert float(py.blobs["loss"].data[0]) == pytest.approx(float(ref.blobs["loss"].data), rel=1e-5)
    np.testing.assert_allclose(py.params["ip"][0].diff, ref.params["ip"][0].diff, rtol=1e-5)


def test_python_layer_learnable_blobs_and_param_str():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 3 } } }
    layer { name: "s" type: "Python" bottom: "x" top: "y" python_param { module: "pyloss" layer: "ScaledBlobLayer"
            param_str: "2.5" } }
    layer { name: "r" type: "Reduction" bottom: "y" top: "loss" loss_weight: 1 }
    """
    net = caffe.Net(net_param(text), caffe.TRAIN)
    assert net.params["s"][0].data.tolist() == [2.5]
    x = np.array([1, 2, 3], np.float32)
    net.forward(x=x)
    assert net.blobs["y"].data.tolist() == [2.5, 5.0, 7.5]
    net.backward()
    assert net.params["s"][0].diff.tolist() == [6.0]


def test_python_layer_import_errors_are_clear():
    text = 'layer { name: "p" type: "Python" python_param { module: "no_such_module_xyz" layer: "L" } }'
    with pytest.raises(ConfigError, match="Python layer 'p': cannot import module 'no_such_module_xyz'"):
        caffe.Net(net_param(text), caffe.TRAIN)


# ----------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_gpu_net_matches_cpu_and_host_writes_take_effect():
    cpu = small_net()
    gpu = small_net(device="cuda")
    x = np.random.default_rng(4).standard_normal((2, 3, 5, 5)).astype(np.float32)
    gpu.blobs["data"].data[...] = x
    out_g = gpu.forward()["prob"]
    out_c = cpu.forward(data=x)["prob"]
    np.testing.assert_allclose(out_g, out_c, rtol=1e-4, atol=1e-5)
    gpu.params["ip"][1].data[...] = 0
    cpu.params["ip"][1].data[...] = 0
    np.testing.assert_allclose(gpu.forward()["prob"], cpu.forward()["prob"], rtol=1e-4, atol=1e-5)
    gi = gpu.backward(prob=np.ones((2, 3), np.float32))["data"]
    ci = cpu.backward(prob=np.ones((2, 3), np.float32))["data"]
    np.testing.assert_allclose(gi, ci, rtol=1e-3, atol=1e-5)


def test_a_partial_forward_leaves_later_blobs_from_the_last_pass():
    """forward(end=...) recomputes the layers up to ``end``; later blobs keep the last pass's values (Caffe)."""
    net = small_net()
    rng = np.random.default_rng(8)
    x1, x2 = rng.standard_normal((2, 2, 3, 5, 5)).astype(np.float32)
    prob1 = net.forward(data=x1)["prob"].copy()
    conv1 = net.blobs["conv"].data.copy()
    net.forward(data=x2, end="relu")
    assert not np.allclose(net.blobs["conv"].data, conv1)  # recomputed
    np.testing.assert_array_equal(net.blobs["prob"].data, prob1)  # as the last full pass left it
