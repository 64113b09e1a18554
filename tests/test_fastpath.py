"""Fast paths (pipeline/fastpath.py) against the plain fp32 path: BN/Scale/ReLU folding at TEST,
channels_last, torch.compile, autocast; the flags of ``pipeline time``; GPU variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipeline as caffe
from pipeline import fastpath
from pipeline.commands import cli

BLOCK = """name: "resblock"
input: "data" input_shape { dim: 2 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 5 kernel_size: 3 stride: 2 weight_filler { type: "gaussian" std: 0.3 }
  bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2" }
layer { name: "scale2" type: "Scale" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "bn3" }
layer { name: "relu3" type: "ReLU" bottom: "bn3" top: "bn3" }
layer { name: "pool" type: "Pooling" bottom: "bn3" top: "pool" pooling_param { pool: AVE global_pooling: true } }
"""

LENET = """name: "lenet_tiny"
input: "data" input_shape { dim: 4 dim: 1 dim: 12 dim: 12 }
input: "label" input_shape { dim: 4 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""

RNG = np.random.default_rng(0)


def _write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _block(tmp_path, **kw):
    caffe.set_random_seed(5)
    net = caffe.Net(_write(tmp_path, BLOCK), caffe.TEST, **kw)
    rng = np.random.default_rng(1)
    for name in ("bn1", "bn2", "bn3"):
        c = net.params[name][0].data.shape[0]
        net.params[name][0].data[...] = rng.standard_normal(c) * 3.0
        net.params[name][1].data[...] = rng.uniform(0.5, 4.0, c) * 3.0
        net.params[name][2].data[...] = 3.0  # Caffe's 1/b2 factor
    for name in ("scale1", "scale2"):
        for blob in net.params[name]:
            blob.data[...] = rng.uniform(-2, 2, blob.data.shape)
    return net


def test_bn_scale_relu_fold_matches_the_plain_path(tmp_path):
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    plain, fused = _block(tmp_path, fuse=False), _block(tmp_path)
    assert plain._fast is None
    assert fused._fast.fused == 2  # conv1+bn1+scale1+relu1, conv2+bn2+scale2; conv3 -> bn3 is not in place
    want = plain.forward(data=x)
    got = fused.forward(data=x)
    np.testing.assert_allclose(got["pool"], want["pool"], rtol=1e-5, atol=1e-5)
    for blob in ("conv1", "conv2", "conv3", "bn3"):  # every readable blob as Caffe's would hold it
        np.testing.assert_allclose(fused.blobs[blob].data, plain.blobs[blob].data, rtol=1e-5, atol=1e-5)
    assert (fused.blobs["conv1"].data >= 0).all() and (fused.blobs["conv1"].data == 0).any()  # ReLU applied
    # weights changed through numpy views: the folded filters follow
    for net in (plain, fused):
        net.params["conv1"][0].data[...] *= -0.5
        net.params["bn2"][0].data[...] += 1.0
    np.testing.assert_allclose(fused.forward(data=x)["pool"], plain.forward(data=x)["pool"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fold_formula_against_float64_numpy(tmp_path, channels_last):
    """conv -> BN (global stats) -> Scale -> ReLU in float64 numpy, for block 1 (channels_last
    on the CPU: oneDNN with the folded filters packed once, when torch has it)."""
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    net = _block(tmp_path, channels_last=channels_last)
    net.forward(data=x)
    if channels_last and fastpath._ONEDNN_CONV:
        assert net._fast.steps[1][0]._packed  # the packed-filter path ran
    w = net.params["conv1"][0].data.astype(np.float64)
    f = 1.0 / net.params["bn1"][2].data[0]
    mean, var = net.params["bn1"][0].data * f, net.params["bn1"][1].data * f
    gamma, beta = net.params["scale1"][0].data, net.params["scale1"][1].data
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((2, 6, 12, 12))
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", xp[:, :, i : i + 12, j : j + 12], w[:, :, i, j])
    y = (conv - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    y = np.maximum(y * gamma[None, :, None, None] + beta[None, :, None, None], 0)
    np.testing.assert_allclose(net.blobs["conv1"].data, y, rtol=1e-4, atol=1e-4)


def test_a_force_backward_net_is_not_fused_and_refuses_fuse(tmp_path):
    text = BLOCK.replace('name: "resblock"', 'name: "resblock"\nforce_backward: true')
    caffe.set_random_seed(5)
    plain = caffe.Net(_write(tmp_path, text, "fb.prototxt"), caffe.TEST)
    assert plain._fast is None  # force_backward: not fused by default
    with pytest.raises(caffe.errors.ConfigError, match="fuse=True"):
        caffe.Net(_write(tmp_path, text, "fb.prototxt"), caffe.TEST, fuse=True)


def test_unfused_when_not_in_place(tmp_path):
    text = BLOCK.replace('top: "conv1" }\nlayer { name: "scale1"', 'top: "bn1" }\nlayer { name: "scale1"')
    text = text.replace('bottom: "conv1" top: "conv1" scale_param', 'bottom: "bn1" top: "bn1" scale_param')
    text = text.replace('layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }',
                        'layer { name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }')
    text = text.replace('type: "Convolution" bottom: "conv1" top: "conv2"', 'type: "Convolution" bottom: "bn1" top: "conv2"')
    net = caffe.Net(_write(tmp_path, text), caffe.TEST)
    assert net._fast.fused == 1  # only conv2 + bn2 + scale2


def _train_grads(tmp_path, **kw):
    caffe.set_random_seed(3)
    net = caffe.Net(_write(tmp_path, LENET, "lenet.prototxt"), caffe.TRAIN, **kw)
    net.blobs["data"].data[...] = np.random.default_rng(2).standard_normal((4, 1, 12, 12))
    net.blobs["label"].data[...] = [0, 1, 2, 1]
    loss = net.forward_backward()
    return loss, {k: [b.diff.copy() for b in v] for k, v in net.params.items()}, net


def test_channels_last_matches_plain_fp32(tmp_path):
    loss0, g0, _ = _train_grads(tmp_path)
    loss1, g1, net = _train_grads(tmp_path, channels_last=True)
    assert net.learnable_params[0].is_contiguous(memory_format=torch.channels_last)
    assert abs(loss0 - loss1) < 1e-5
    for k in g0:
        for a, b in zip(g0[k], g1[k]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_compile_graph_capture_matches_plain(tmp_path):
    """torch.compile's graph capture (backend aot_eager: no code generation, fast on CPU)."""
    loss0, g0, _ = _train_grads(tmp_path)
    loss1, g1, net = _train_grads(tmp_path, compile="aot_eager")
    assert net._fast._compiled is not None
    assert abs(loss0 - loss1) < 1e-5
    for k in g0:
        for a, b in zip(g0[k], g1[k]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_compile_inductor_matches_plain(tmp_path):
    """Inductor's generated CPU code (~30-60 s to compile on a 2-core machine: slow)."""
    loss0, g0, _ = _train_grads(tmp_path)
    loss1, g1, _ = _train_grads(tmp_path, compile=True)
    assert abs(loss0 - loss1) < 1e-4
    for k in g0:
        for a, b in zip(g0[k], g1[k]):
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


def test_bf16_autocast_on_cpu_is_close_and_blobs_stay_float32(tmp_path):
    loss0, g0, _ = _train_grads(tmp_path)
    loss1, g1, net = _train_grads(tmp_path, precision="bf16")
    assert net.blobs["conv1"].data.dtype == np.float32
    assert abs(loss0 - loss1) < 2e-2 * max(1.0, abs(loss0))
    for k in g0:
        for a, b in zip(g0[k], g1[k]):
            assert np.abs(b - a).max() <= 5e-2 * np.abs(a).max() + 1e-4, k


def test_fp16_on_cpu_and_unknown_precision_are_refused(tmp_path):
    with pytest.raises(caffe.errors.ConfigError, match="fp16 needs a CUDA"):
        caffe.Net(_write(tmp_path, LENET, "lenet.prototxt"), caffe.TRAIN, precision="fp16", device="cpu")
    with pytest.raises(caffe.errors.ConfigError, match="choose one of"):
        caffe.Net(_write(tmp_path, LENET, "lenet.prototxt"), caffe.TRAIN, precision="int8")


def test_time_command_takes_the_fast_flags(tmp_path, capsys):
    model = _write(tmp_path, LENET, "lenet.prototxt")
    assert cli.main(["time", "--model", model, "--iterations", "2", "--channels_last", "--precision", "bf16"]) == 0
    err = capsys.readouterr().err
    assert "Average Forward pass" in err and "Average Forward-Backward" in err


# ------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("kw,tol", [({"channels_last": True}, 1e-3), ({"precision": "bf16"}, 5e-2),
                                    ({"precision": "fp16"}, 1e-2), ({"compile": True}, 1e-3),
                                    ({"channels_last": True, "precision": "bf16"}, 5e-2)])
def test_gpu_fast_paths_match_fp32(tmp_path, kw, tol):
    model = _write(tmp_path, LENET, "lenet.prototxt")
    outs = []
    for k in ({}, kw):
        caffe.set_random_seed(3)
        net = caffe.Net(model, caffe.TRAIN, device="cuda", **k)
        net.blobs["data"].data[...] = np.random.default_rng(2).standard_normal((4, 1, 12, 12))
        net.blobs["label"].data[...] = [0, 1, 2, 1]
        loss = net.forward_backward()
        scale = net._fast.scaler.scale if net._fast is not None and net._fast.scaler is not None else 1.0
        outs.append((loss, [p.grad.detach().cpu().numpy() / scale for p in net.learnable_params]))
    (l0, g0), (l1, g1) = outs
    assert abs(l0 - l1) <= tol * max(1.0, abs(l0))
    for a, b in zip(g0, g1):
        assert np.abs(b - a).max() <= tol * np.abs(a).max() + 1e-5


@pytest.mark.gpu
def test_gpu_bn_fold_matches_plain(tmp_path):
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    plain = _block(tmp_path, fuse=False, device="cuda")
    fused = _block(tmp_path, device="cuda", channels_last=True)
    np.testing.assert_allclose(fused.forward(data=x)["pool"], plain.forward(data=x)["pool"], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_gpu_fp32_is_strict_and_tf32_is_a_choice(tmp_path):
    """precision fp32 turns cuDNN's TF32 off (PyTorch's default leaves it on); tf32 turns it on."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        _block(tmp_path, device="cuda", precision="tf32")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        _block(tmp_path, device="cuda")
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("value, options", [
    (True, {"backend": "inductor"}),
    ("aot_eager", {"backend": "aot_eager"}),
    ("reduce-overhead", {"backend": "inductor", "mode": "reduce-overhead"}),  # CUDA graphs
    ("max-autotune", {"backend": "inductor", "mode": "max-autotune"}),
])
def test_compile_value_is_a_mode_or_a_backend(value, options):
    assert fastpath.compile_options(value) == options


@pytest.mark.gpu
def test_gpu_cuda_graphs_inference_matches_eager(tmp_path):
    """compile="reduce-overhead" (CUDA graphs replayed for the net's fixed shapes) on a TEST net."""
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    eager = _block(tmp_path, device="cuda")
    graphs = _block(tmp_path, device="cuda", compile="reduce-overhead")
    want = eager.forward(data=x)["pool"].copy()
    for _ in range(3):  # record, then replays
        got = graphs.forward(data=x)["pool"].copy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv_relu_alone_is_fused_only_where_one_primitive_does_both(tmp_path):
    """conv -> ReLU (no BatchNorm/Scale to fold) is fused for oneDNN (CPU, channels_last),
    where the ReLU runs inside the convolution; elsewhere it stays two layers."""
    text = LENET.replace('input: "label" input_shape { dim: 4 }\n', "").split('layer { name: "loss"')[0]
    path = _write(tmp_path, text, "convrelu.prototxt")
    assert caffe.Net(path, caffe.TEST)._fast is None
    net = caffe.Net(path, caffe.TEST, channels_last=True)
    assert net._fast.fused == (1 if fastpath._ONEDNN_CONV else 0)
    x = RNG.standard_normal((4, 1, 12, 12)).astype(np.float32)
    plain = caffe.Net(path, caffe.TEST, fuse=False)
    for name in net.params:
        for a, b in zip(net.params[name], plain.params[name]):
            a.data[...] = b.data
    np.testing.assert_allclose(net.forward(data=x)["ip1"], plain.forward(data=x)["ip1"], rtol=1e-5, atol=1e-5)


def test_compiled_training_forward_is_one_graph_and_bad_labels_still_name_the_layer(tmp_path):
    """The label range check is an assert inside the graph (no graph break); a bad label in a
    compiled net raises the same typed error as the eager net."""
    caffe.set_random_seed(3)
    net = caffe.Net(_write(tmp_path, LENET, "lenet.prototxt"), caffe.TRAIN, compile="aot_eager")
    net.blobs["data"].data[...] = np.random.default_rng(2).standard_normal((4, 1, 12, 12))
    net.blobs["label"].data[...] = [0, 1, 2, 1]
    fp = net._fast
    head = fp.steps[: fp.n_head] + [s for s in fp.steps[fp.n_head:] if s[4]]
    net._run_steps(head, True)
    explained = torch._dynamo.explain(fp._body)({k: net._values[k] for s in head for k in s[2]})
    assert explained.graph_break_count == 0
    net.forward_backward()
    net.blobs["label"].data[...] = [0, 1, 7, 1]
    with pytest.raises(caffe.errors.DataError, match="SoftmaxWithLoss layer 'loss': label 7 is outside"):
        net.forward_backward()
