"""Whole fork nets: SSD300 (VGG16) and MobileNet-SSD on a real photo, an SE-ResNet with Axpy,
a DenseNet stem with the fork's pooling ``ceil_mode``.

The nets are tests/data_nets/*.prototxt, written by tests/data_nets/fork_nets.py after
the published architectures; weights are random (seeded). Detections are checked for
form (shape, labels, sorted scores, boxes in [0, 1]) and against the independent
reference of tests/ssd_reference.py applied to the net's own blobs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from ssd_reference import ref_detection_output

import pipeline as caffe
from pipeline.commands.summary import format_summary, summarize
from pipeline.errors import ConfigError
from pipeline.formats import forks, prototxt
from pipeline.proto import caffe_pb2
from pipeline.registry import LAYERS

NETS = Path(__file__).parent / "data_nets"


def _net(name: str, seed: int = 0) -> caffe.Net:
    torch.manual_seed(seed)
    return caffe.Net(str(NETS / f"{name}.prototxt"), caffe.TEST)


def _photo(net, caffe_zoo, mean, scale=None):
    image = caffe.io.load_image(str(caffe_zoo / "BVLC__caffe" / "examples" / "images" / "cat.jpg"))
    t = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array(mean, dtype=np.float32))
    if scale is not None:
        t.set_input_scale("data", scale)
    return t.preprocess("data", image)


def _check_detections(net, det, num_classes, keep_top_k, threshold, top_k):
    assert det.ndim == 4 and det.shape[:2] == (1, 1) and det.shape[3] == 7
    assert net.blobs["detection_out"].shape == det.shape  # the top was reshaped by forward
    rows = det[0, 0]
    assert 1 <= len(rows) <= keep_top_k
    assert (rows[:, 0] == 0).all()
    labels = rows[:, 1].astype(int)
    assert (rows[:, 1] == labels).all() and labels.min() >= 1 and labels.max() < num_classes
    assert (np.diff(labels) >= 0).all()  # classes ascending
    for c in np.unique(labels):
        scores = rows[labels == c, 2]
        assert (np.diff(scores) <= 0).all(), f"class {c}: scores not sorted"
        assert len(scores) <= top_k
    assert (rows[:, 2] > threshold).all() and (rows[:, 2] <= 1).all()
    boxes = rows[:, 3:]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    want = ref_detection_output(net.blobs["mbox_loc"].data.astype(np.float64),
                                net.blobs["mbox_conf_flatten"].data.astype(np.float64),
                                net.blobs["mbox_priorbox"].data.astype(np.float64), num_classes, nms=0.45,
                                top_k=top_k, code="CENTER_SIZE", keep_top_k=keep_top_k, conf_thr=threshold)
    assert want.shape == det.shape
    np.testing.assert_array_equal(det[0, 0, :, :2], want[0, 0, :, :2])
    np.testing.assert_allclose(det, want, rtol=1e-5, atol=1e-6)


def test_checked_in_prototxts_are_current(tmp_path):
    from data_nets import fork_nets

    for path in fork_nets.write_all(tmp_path):
        assert path.read_text() == (NETS / path.name).read_text(), f"{path.name}: run tests/data_nets/fork_nets.py"


def test_ssd300_vgg16_detects_on_a_photo(caffe_zoo):
    net = _net("ssd300_vgg16_deploy")
    assert net.blobs["mbox_priorbox"].shape == (1, 2, 8732 * 4)
    assert net.blobs["conv4_3_norm"].shape == (1, 512, 38, 38) and net.blobs["fc7"].shape == (1, 1024, 19, 19)
    assert [net.blobs[f"conv{k}_2"].shape[2] for k in (6, 7, 8, 9)] == [10, 5, 3, 1]
    np.testing.assert_array_equal(net.params["conv4_3_norm"][0].data, np.full(512, 20, np.float32))
    out = net.forward(data=_photo(net, caffe_zoo, [104, 117, 123])[None])
    _check_detections(net, out["detection_out"], 21, keep_top_k=200, threshold=0.01, top_k=400)


def test_mobilenet_ssd_detects_on_a_photo(caffe_zoo):
    net = _net("mobilenet_ssd_deploy")
    assert net.blobs["mbox_priorbox"].shape == (1, 2, 1917 * 4)
    assert net.blobs["conv11"].shape == (1, 512, 19, 19) and net.blobs["conv17_2"].shape == (1, 128, 1, 1)
    assert net.params["conv1/dw"][0].shape == (32, 1, 3, 3)  # depthwise: group = channels
    # Random weights give near-uniform class scores (about 1/21) under the published 0.25
    # threshold; larger random confidence weights give some scores above it.
    for name in net.params:
        if name.endswith("_mbox_conf"):
            net.params[name][0].data[...] *= 8
    out = net.forward(data=_photo(net, caffe_zoo, [127.5] * 3, scale=0.007843)[None])
    _check_detections(net, out["detection_out"], 21, keep_top_k=100, threshold=0.25, top_k=100)


def test_no_detection_gives_one_row_of_minus_one(caffe_zoo):
    net = _net("mobilenet_ssd_deploy")  # random weights: no score reaches 0.25
    det = net.forward(data=_photo(net, caffe_zoo, [127.5] * 3, scale=0.007843)[None])["detection_out"]
    assert net.blobs["mbox_conf_softmax"].data[..., 1:].max() < 0.25
    np.testing.assert_array_equal(det, -np.ones((1, 1, 1, 7)))


def test_summary_marks_the_fork_layers():
    net = _net("ssd300_vgg16_deploy")
    s = summarize(net)
    notes = {r.type: r.note for r in s.rows}
    for t in ("Normalize", "Permute", "PriorBox", "DetectionOutput"):
        assert notes[t] == f"fork: {forks.SSD}"
    assert notes["Convolution"] == "" and notes["Softmax"] == ""
    assert "PriorBox (fork: SSD (weiliu89/caffe, branch ssd))" in format_summary(s)


def test_every_fork_layer_class_names_its_fork():
    registered = {name: cls for name, cls in LAYERS.items() if getattr(cls, "fork", None)}
    assert set(registered) == set(forks.SUPPORTED_FORK_TYPES)
    for name, cls in registered.items():
        assert cls.fork == forks.FORK_LAYER_TYPES[name] == forks.fork_of_type(name)
        assert forks.fork_hint_for_type(name) == ""
    assert "not support" in forks.fork_hint_for_type("Region")
    assert forks.fork_hint_for_field("prior_box_param") == "" and "SegNet" in forks.fork_hint_for_field("bn_param")


def test_se_resnet_axpy_blocks_run():
    net = _net("se_resnet_tiny")
    for name, blobs in net.params.items():  # BatchNorm statistics: mean 0, variance 1, factor 1
        if name.endswith("/bn"):
            blobs[1].data[...] = 1
            blobs[2].data[...] = 1
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    prob = net.forward(data=x)["prob"]
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)
    b = net.blobs
    # conv2_1 is the post-ReLU value (in place), which is also conv2_2's shortcut.
    for block, shortcut in (("conv2_1", "conv2_1_1x1_proj"), ("conv2_2", "conv2_1")):
        a = b[f"{block}_1x1_up"].data  # Sigmoid in place: the excitation, (N, C, 1, 1)
        assert a.shape == (2, 64, 1, 1) and (a >= 0).all() and (a <= 1).all() and a.std() > 0.1
        want = np.maximum(a * b[f"{block}_1x1_increase"].data + b[shortcut].data, 0)
        np.testing.assert_allclose(b[block].data, want, rtol=1e-5, atol=1e-6)
    assert b["conv2_2"].shape == (2, 64, 8, 8)


def _densenet(ceil_mode=None, round_mode=None):
    from data_nets import fork_nets

    net = fork_nets.densenet_tiny()
    net.layer[0].input_param.shape[0].dim[2:] = [59, 59]
    for lp in net.layer:
        if lp.type == "Pooling":
            lp.pooling_param.ClearField("ceil_mode")
            if ceil_mode is not None:
                lp.pooling_param.ceil_mode = ceil_mode
            if round_mode is not None:
                lp.pooling_param.round_mode = caffe_pb2.PoolingParameter.RoundMode.Value(round_mode)
    torch.manual_seed(3)
    return caffe.Net(net, caffe.TEST)


def test_densenet_ceil_mode_false_is_floor_rounding():
    x = np.random.default_rng(1).standard_normal((1, 3, 59, 59)).astype(np.float32)
    fork_floor, bvlc_floor = _densenet(ceil_mode=False), _densenet(round_mode="FLOOR")
    fork_ceil, bvlc_ceil = _densenet(ceil_mode=True), _densenet()
    assert fork_floor.blobs["pool1"].shape == (1, 16, 15, 15) and fork_floor.blobs["pool2"].shape == (1, 16, 7, 7)
    assert bvlc_ceil.blobs["pool1"].shape == (1, 16, 16, 16) and bvlc_ceil.blobs["pool2"].shape == (1, 16, 8, 8)
    for fork, bvlc in ((fork_floor, bvlc_floor), (fork_ceil, bvlc_ceil)):
        np.testing.assert_array_equal(fork.forward(data=x)["pool2"], bvlc.forward(data=x)["pool2"])


def test_densenet_prototxt_with_ceil_mode_parses_and_builds():
    assert (NETS / "densenet_tiny_ceil_false.prototxt").read_text().count("ceil_mode: false") == 2
    net = caffe.Net(str(NETS / "densenet_tiny_ceil_false.prototxt"), caffe.TEST)
    # 57 -> conv 7/2 -> 29 -> MAX 3/2 pad 1, floor -> 15 -> AVE 2/2, floor -> 7 (ceil would give 8)
    assert net.blobs["pool1"].shape == (1, 16, 15, 15) and net.blobs["pool2"].shape == (1, 16, 7, 7)
    out = net.forward(data=np.ones((1, 3, 57, 57), np.float32))["pool2"]
    assert np.isfinite(out).all()


def test_ceil_mode_contradicting_round_mode_is_refused():
    lp = text_format.Parse('name: "p" type: "Pooling" pooling_param { kernel_size: 2 stride: 2 ceil_mode: false '
                           'round_mode: CEIL }', caffe_pb2.LayerParameter())
    with pytest.raises(ConfigError, match="Pooling layer 'p'.*ceil_mode: false contradicts round_mode: CEIL"):
        LAYERS.get("Pooling").from_param(lp)
    assert prototxt.to_text(lp).count("ceil_mode") == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ssd300_on_cuda(caffe_zoo):
    torch.manual_seed(0)
    net = caffe.Net(str(NETS / "ssd300_vgg16_deploy.prototxt"), caffe.TEST, device="cuda")
    out = net.forward(data=_photo(net, caffe_zoo, [104, 117, 123])[None])
    _check_detections(net, out["detection_out"], 21, keep_top_k=200, threshold=0.01, top_k=400)
