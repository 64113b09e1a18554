"""pipeline draw: Caffe's draw_net.py graph as DOT text (ours) and images (Graphviz)."""

from __future__ import annotations

import re
import shutil

import pytest

from pipeline import drawing
from pipeline.commands import cli
from pipeline.formats import prototxt
from pipeline.proto import caffe_pb2

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")

NODE = re.compile(r'^  "([^"]+)" \[(.*)\];$')
EDGE = re.compile(r'^  "([^"]+)" -> "([^"]+)"(?: \[label="([^"]*)"\])?;$')


def parse_dot(text):
    """Our DOT output read back: {node: {attr: value}}, [(src, dst, label)]."""
    nodes, edges = {}, []
    for line in text.splitlines():
        if m := EDGE.match(line):
            edges.append((m[1], m[2], m[3] or ""))
        elif m := NODE.match(line):
            nodes[m[1]] = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[2]))
    return nodes, edges


def _draw(tmp_path, net, *flags, name="net.dot"):
    out = tmp_path / name
    assert cli.main(["draw", str(net), str(out), *flags]) == 0
    return out


def test_lenet_train_test_phases(caffe_zoo, tmp_path):
    net = caffe_zoo / "BVLC__caffe/examples/mnist/lenet_train_test.prototxt"
    nodes, edges = parse_dot(_draw(tmp_path, net, "--phase", "TEST").read_text())
    # 9 layers of the TEST net (both "mnist" Data layers share one node id, as in Caffe) + 9 blobs
    assert sorted(k for k in nodes if not k.endswith("_blob")) == sorted([
        "mnist_Data", "conv1_Convolution", "pool1_Pooling", "conv2_Convolution", "pool2_Pooling",
        "ip1_InnerProduct", "relu1_ReLU", "ip2_InnerProduct", "accuracy_Accuracy", "loss_SoftmaxWithLoss"])
    assert nodes["conv1_Convolution"] == {"shape": "record", "style": "filled", "fillcolor": "#FF5050",
                                          "label": r"conv1\n(Convolution)\nkernel size: 5\nstride: 1\npad: 0"}
    assert nodes["pool1_Pooling"]["label"] == r"pool1\n(Pooling MAX)\nkernel size: 2\nstride: 2\npad: 0"
    assert nodes["pool1_Pooling"]["fillcolor"] == "#FF9900"
    assert nodes["ip1_InnerProduct"]["fillcolor"] == "#CC33FF"
    assert nodes["relu1_ReLU"]["fillcolor"] == "#90EE90"  # in place
    assert nodes["loss_SoftmaxWithLoss"]["fillcolor"] == "#6495ED"
    assert nodes["data_blob"] == {"shape": "octagon", "style": "filled", "fillcolor": "#E0E0E0", "label": "data"}
    assert nodes["loss_blob"] == {"label": "loss"}  # only ever written: plain, as in Caffe
    # no LMDB here, so the edges carry Caffe's labels: batch size and num_output
    assert ("mnist_Data", "data_blob", "Batch 100") in edges
    assert ("conv1_Convolution", "conv1_blob", "20") in edges
    assert ("ip1_blob", "relu1_ReLU", "") in edges and ("relu1_ReLU", "ip1_blob", "") in edges
    nodes_train, edges_train = parse_dot(_draw(tmp_path, net, "--phase", "TRAIN").read_text())
    assert "accuracy_Accuracy" not in nodes_train and ("mnist_Data", "data_blob", "Batch 64") in edges_train
    _, edges_all = parse_dot(_draw(tmp_path, net).read_text())  # default ALL: both Data layers
    assert {e for e in edges_all if e[0] == "mnist_Data"} == {
        ("mnist_Data", "data_blob", "Batch 64"), ("mnist_Data", "label_blob", "Batch 64"),
        ("mnist_Data", "data_blob", "Batch 100"), ("mnist_Data", "label_blob", "Batch 100")}


def test_shapes_on_edges_rankdir_and_lr_mults(caffe_zoo, tmp_path):
    net = caffe_zoo / "BVLC__caffe/examples/mnist/lenet.prototxt"
    text = _draw(tmp_path, net, "--rankdir", "TB", "--display_lrm").read_text()
    assert "rankdir=TB;" in text
    nodes, edges = parse_dot(text)
    # conv: (28 - 5)/1 + 1 = 24; pool: ceil((24 - 2)/2) + 1 = 12; conv2: 8; pool2: 4
    assert ("conv1_Convolution", "conv1_blob", "64x20x24x24") in edges
    assert ("pool1_Pooling", "pool1_blob", "64x20x12x12") in edges
    assert ("pool2_Pooling", "pool2_blob", "64x50x4x4") in edges
    assert ("ip2_InnerProduct", "ip2_blob", "64x10") in edges
    assert nodes["conv1_Convolution"]["label"] == (
        "conv1 (Convolution) kernel size: 5 stride: 1 pad: 0 lr mult: 1.0, 2.0")
    assert nodes["ip1_InnerProduct"]["label"] == "ip1 (InnerProduct) lr mult: 1.0, 2.0"


def test_googlenet_graph_covers_every_layer_and_blob(caffe_zoo):
    param = prototxt.read_net(caffe_zoo / "BVLC__caffe/models/bvlc_googlenet/deploy.prototxt")
    g = drawing.net_graph(param, "LR")
    layers = {f"{lp.name}_{lp.type}" for lp in param.layer}
    blobs = {f"{b}_blob" for lp in param.layer for b in list(lp.bottom) + list(lp.top)}
    assert set(g.nodes) == layers | blobs
    assert len(g.edges) == sum(len(lp.bottom) + len(lp.top) for lp in param.layer)
    assert g.nodes["inception_3a/5x5_Convolution"]["label"].split("\n")[2:] == [
        "kernel size: 5", "stride: 1", "pad: 2"]


def test_labels_are_escaped_for_records():
    param = prototxt.parse_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
        'layer { name: "a|b{c}<d>\\"e" type: "ReLU" bottom: "x" top: "y" }\n',
        caffe_pb2.NetParameter())
    text = drawing.to_dot(drawing.net_graph(param))
    assert r'label="a\|b\{c\}\<d\>\"e\n(ReLU)"' in text
    if shutil.which("dot"):
        svg = drawing.render(text, "svg").decode()
        assert "a|b{c}&lt;d&gt;&quot;e" in svg


@needs_dot
@pytest.mark.parametrize("ext, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<?xml")])
def test_images_with_graphviz(caffe_zoo, tmp_path, ext, magic):
    out = _draw(tmp_path, caffe_zoo / "BVLC__caffe/examples/mnist/lenet.prototxt", name=f"lenet.{ext}")
    data = out.read_bytes()
    assert data.startswith(magic)
    if ext == "svg":
        assert "conv1 (Convolution)" not in data.decode() and ">conv1</text>" in data.decode()


def test_missing_graphviz_is_one_line_and_dot_still_works(caffe_zoo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'dot' here
    net = caffe_zoo / "BVLC__caffe/examples/mnist/lenet.prototxt"
    out = tmp_path / "lenet.png"
    assert cli.main(["draw", str(net), str(out), "--no_shapes"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'dot'" in err[0] and "Graphviz" in err[0] and ".dot" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".lenet.png*"))
    assert cli.main(["draw", str(net), str(tmp_path / "lenet.dot"), "--no_shapes"]) == 0


def test_bad_extension_and_rankdir(caffe_zoo, tmp_path, capsys):
    net = caffe_zoo / "BVLC__caffe/examples/mnist/lenet.prototxt"
    assert cli.main(["draw", str(net), str(tmp_path / "lenet.bmpx")]) == 1
    assert "use one of .dot" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse usage errors exit 2, as for every command
        cli.main(["draw", str(net), str(tmp_path / "x.dot"), "--rankdir", "XY"])
    assert e.value.code == 2 and "invalid choice: 'XY'" in capsys.readouterr().err
