"""Steps the Net merges or runs in place for speed (pipeline/netgraph.py ``in_place_activations``,
pipeline/fastpath.py ``fuse_batchnorm_scale``), against a float64 reference written from
Caffe's formulas, and the rules that keep them invisible: a run that would cut a merged
pair in two runs layer by layer; a ReLU overwrites only what nothing else can read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pipeline as caffe
from pipeline import netgraph
from pipeline.blob import _HostMirror
from pipeline.formats import prototxt
from pipeline.proto import caffe_pb2

TRAIN_BLOCK = """name: "bn_train"
input: "data" input_shape { dim: 3 dim: 2 dim: 6 dim: 6 }
input: "label" input_shape { dim: 3 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 bias_term: false weight_filler { type: "gaussian" std: 0.4 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _net(tmp_path, text=TRAIN_BLOCK, phase=caffe.TRAIN):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    caffe.set_random_seed(7)
    net = caffe.Net(str(path), phase)
    rng = np.random.default_rng(3)
    if "scale1" in net.params:
        net.params["scale1"][0].data[...] = rng.uniform(0.5, 2.0, 4)
        net.params["scale1"][1].data[...] = rng.uniform(-1.0, 1.0, 4)
    net.blobs["data"].data[...] = rng.standard_normal((3, 2, 6, 6))
    net.blobs["label"].data[...] = [0, 3, 4]
    return net


def _reference(net):
    """Loss, parameter gradients and BatchNorm blobs of one TRAIN pass, in float64, by hand."""
    d = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    x, label = d(net.blobs["data"].data), d(net.blobs["label"].data).long()
    w = d(net.params["conv1"][0].data).requires_grad_()
    gamma, beta = (d(b.data).requires_grad_() for b in net.params["scale1"])
    ipw, ipb = (d(b.data).requires_grad_() for b in net.params["ip"])
    conv = F.conv2d(x, w)
    m = conv.numel() // conv.shape[1]
    mean = conv.mean(dim=(0, 2, 3))
    var = ((conv - mean.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
    y = (conv - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)
    y = torch.clamp(y * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1), min=0)
    logits = y.reshape(3, -1) @ ipw.t() + ipb
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    loss = -logp[torch.arange(3), label].mean()
    loss.backward()
    stats = [mean.detach().numpy(), var.detach().numpy() * m / (m - 1), np.array([1.0])]
    grads = {"conv1": [w.grad], "scale1": [gamma.grad, beta.grad], "ip": [ipw.grad, ipb.grad]}
    return float(loss.detach()), {k: [g.numpy() for g in v] for k, v in grads.items()}, stats, y.detach().numpy()


def test_train_pass_with_merged_batchnorm_scale_matches_float64(tmp_path):
    net = _net(tmp_path)
    bn, scale = net._layer_index["bn1"], net._layer_index["scale1"]
    assert net._merged_spans == [(bn, scale)]
    assert net.layer_dict["relu1"].module.in_place
    want_loss, want_grads, want_stats, want_top = _reference(net)
    loss = net.forward_backward()
    assert loss == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(net.blobs["conv1"].data, want_top, rtol=1e-4, atol=1e-5)
    for name, grads in want_grads.items():
        for blob, g in zip(net.params[name], grads):
            np.testing.assert_allclose(blob.diff, g, rtol=1e-4, atol=1e-6, err_msg=name)
    for blob, s in zip(net.params["bn1"], want_stats):
        np.testing.assert_allclose(blob.data, s, rtol=1e-5, atol=1e-6)
    net.forward_backward()  # a second pass: b <- 0.9 b + batch terms (same batch)
    for blob, s in zip(net.params["bn1"], want_stats):
        np.testing.assert_allclose(blob.data, 1.9 * s, rtol=1e-5, atol=1e-6)


def test_a_run_ending_between_batchnorm_and_scale_leaves_the_normalized_blob(tmp_path):
    net = _net(tmp_path)
    net.forward(end="bn1")  # Caffe: the blob holds BatchNorm's output; the Scale has not run
    conv = np.asarray(net.blobs["conv1"].data, np.float64)
    net2 = _net(tmp_path)
    net2.forward(end="conv1")
    raw = np.asarray(net2.blobs["conv1"].data, np.float64)
    mean, var = raw.mean(axis=(0, 2, 3), keepdims=True), raw.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(conv, (raw - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    net.forward(start="scale1", end="scale1")  # then the Scale alone, on what the blob holds
    gamma, beta = (np.asarray(b.data, np.float64).reshape(1, -1, 1, 1) for b in net.params["scale1"])
    np.testing.assert_allclose(net.blobs["conv1"].data, conv * gamma + beta, rtol=1e-5, atol=1e-5)


def _plans(body: str):
    text = 'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'
    param = prototxt.parse_text(text + body, caffe_pb2.NetParameter(), "<t>")
    return netgraph.plan_layers(param, "<t>")


CONV = 'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'


@pytest.mark.parametrize("body, expected", [
    (CONV + 'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }', [2]),  # in place, after a convolution
    (CONV + 'layer { name: "r" type: "ReLU" bottom: "c" top: "r" }', []),  # not in place: Caffe keeps "c"
    ('layer { name: "r" type: "ReLU" bottom: "x" top: "x" }', []),  # the net's input
    (CONV + 'layer { name: "r" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0.1 } }', []),
    (CONV + 'layer { name: "f" type: "Flatten" bottom: "c" top: "c" }\n'
            'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }', []),  # after a view of another blob
    (CONV + 'layer { name: "e" type: "Eltwise" bottom: "c" top: "e" }\n'
            'layer { name: "r" type: "ReLU" bottom: "e" top: "e" }', []),  # one-bottom Eltwise passes "c" through
    (CONV + 'layer { name: "e" type: "Eltwise" bottom: "c" bottom: "c" top: "e" }\n'
            'layer { name: "r" type: "ReLU" bottom: "e" top: "e" }', [3]),
    (CONV + 'layer { name: "r" type: "ReLU" bottom: "c" top: "c" propagate_down: false }', []),
    (CONV + 'layer { name: "s" type: "Sigmoid" bottom: "c" top: "s" }\n'
            'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }', []),  # "c" was read in between
])
def test_in_place_activation_rules(body, expected):
    assert netgraph.in_place_activations(_plans(body)) == expected


def test_in_place_relu_keeps_gradients_of_a_force_backward_net(tmp_path):
    """Input gradients through conv -> in-place ReLU equal finite differences of the loss."""
    text = ('name: "fb" force_backward: true\n'
            'input: "x" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n' + CONV.replace('"x"', '"x"')
            + 'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }\n'
            'layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: AVE global_pooling: true } }\n')
    text = text.replace("convolution_param { num_output: 2 kernel_size: 1 }",
                        'convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } '
                        'bias_filler { type: "gaussian" std: 0.5 } }')
    path = tmp_path / "fb.prototxt"
    path.write_text(text)
    caffe.set_random_seed(2)
    net = caffe.Net(str(path), caffe.TEST, fuse=False)
    assert net.layer_dict["r"].module.in_place
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4))
    net.forward(x=x)
    grad = net.backward(p=np.ones((1, 2, 1, 1), np.float32))["x"].astype(np.float64)
    w = np.asarray(net.params["c"][0].data, np.float64).reshape(2, 2)
    b = np.asarray(net.params["c"][1].data, np.float64)
    f = lambda v: np.maximum(np.einsum("oc,nchw->nohw", w, v) + b[None, :, None, None], 0).mean(axis=(2, 3)).sum()  # noqa: E731
    num = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-6
        num[i] = (f(x + e) - f(x - e)) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-3, atol=1e-5)


def test_compile_with_an_input_layer_after_other_layers(tmp_path):
    """The label Input declared after the convolutions is fed before the compiled body runs."""
    text = TRAIN_BLOCK.replace('input: "label" input_shape { dim: 3 }\n', "").replace(
        'layer { name: "loss"',
        'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 3 } } }\nlayer { name: "loss"')
    plain = _net(tmp_path, text)
    want = plain.forward_backward()
    path = tmp_path / "c.prototxt"
    path.write_text(text)
    caffe.set_random_seed(7)
    net = caffe.Net(str(path), caffe.TRAIN, compile="aot_eager")
    for name in net.params:
        for a, b in zip(net.params[name], plain.params[name]):
            a.data[...] = b.data
    net.blobs["data"].data[...] = plain.blobs["data"].data
    net.blobs["label"].data[...] = plain.blobs["label"].data
    assert net.forward_backward() == pytest.approx(want, rel=1e-5)


def test_host_mirror_uploads_only_arrays_that_were_written():
    """A device blob read through numpy is not written back (a recorded graph may have saved it)."""
    mirror = _HostMirror()
    read, written = torch.zeros(3), torch.zeros(3)
    for key, t in (("read", read), ("written", written)):
        arr = t.numpy().copy()  # what view() hands out for a device tensor: a host copy
        mirror._arrays[key] = (t, arr, arr.copy())
    mirror._arrays["written"][1][1] = 5.0
    v_read, v_written = read._version, written._version
    mirror.upload()
    assert read._version == v_read and written._version > v_written
    assert written.tolist() == [0.0, 5.0, 0.0]
