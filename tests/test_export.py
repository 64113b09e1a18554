"""``pipeline export``: the zoo's deploy nets as ONNX (run in onnxruntime) and TorchScript.

LeNet, CaffeNet and GoogLeNet from ../shared/caffe-zoo get random weights from
Caffe's fillers (msra weights keep activations of a deep ReLU net in range, so the
softmax is far from uniform and the comparison means something). The ONNX file runs
in onnxruntime at two batch sizes (the batch axis is dynamic) and the TorchScript
archive through ``torch.jit.load``; both are compared with ``net.forward``: max
relative error (max |a − b| / max |b|) ≤ 1e-4, for the logits and the probabilities.
ONNX tests skip without onnx/onnxscript (export) or onnxruntime (running).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch

import pipeline as caffe
from pipeline import export
from pipeline.commands import cli
from pipeline.errors import ConfigError
from pipeline.fillers import Filler, fill

HAVE_ONNX_EXPORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX_EXPORT, reason="ONNX export needs onnx and onnxscript (the export extra)")

# (prototxt, input shape without batch, the last layer before the softmax)
NETS = {
    "lenet": ("examples/mnist/lenet.prototxt", (1, 28, 28), "ip2"),
    "caffenet": ("models/bvlc_reference_caffenet/deploy.prototxt", (3, 227, 227), "fc8"),
    "googlenet": ("models/bvlc_googlenet/deploy.prototxt", (3, 224, 224), "loss3/classifier"),
}


def random_net(zoo, key: str):
    """The deploy net with msra weights and gaussian(std 0.1) biases from Caffe's fillers."""
    caffe.set_random_seed(1701)
    net = caffe.Net(str(zoo / "BVLC__caffe" / NETS[key][0]), caffe.TEST)
    for blobs in net.params.values():
        for i, b in enumerate(blobs):
            spec = Filler(type="msra") if i == 0 and len(b.shape) > 1 else Filler(type="gaussian", std=0.1)
            b.data[...] = fill(spec, b.shape).numpy()
    return net


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def batch(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def ours(net, x, blobs):
    out = net.forward(data=x, blobs=blobs)
    return [np.array(out[b], copy=True) for b in blobs]


def check_onnx(path, net, key):
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "data" and inp.shape[0] == "batch" and tuple(inp.shape[1:]) == NETS[key][1]
    names = [o.name for o in sess.get_outputs()]
    for n, seed in ((2, 1), (1, 2)):  # two batch sizes through one file
        x = batch(NETS[key][1], n, seed)
        got = sess.run(names, {"data": x})
        want = ours(net, x, names)
        for name, g, w in zip(names, got, want):
            assert g.shape == w.shape, name
            assert rel_err(g, w) <= 1e-4, (name, rel_err(g, w))
    return names


def check_torchscript(path, net, key, names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript; it still runs
        module = torch.jit.load(str(path))
    x = batch(NETS[key][1], 3, 3)
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    want = ours(net, x, names)
    assert len(got) == len(names)
    for name, g, w in zip(names, got, want):
        assert rel_err(g.numpy(), w) <= 1e-4, name


@needs_onnx
def test_lenet_command_with_weights(caffe_zoo, tmp_path, capsys):
    """The command: weights from a .caffemodel, ONNX (opset stated) and TorchScript in one run."""
    net = random_net(caffe_zoo, "lenet")
    net.save(str(tmp_path / "lenet.caffemodel"))
    model = caffe_zoo / "BVLC__caffe" / NETS["lenet"][0]
    rc = cli.main(["export", "-model", str(model), "-weights", str(tmp_path / "lenet.caffemodel"),
                   "--onnx", str(tmp_path / "lenet.onnx"), "--torchscript=" + str(tmp_path / "lenet.pt")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ONNX opset 18" in out and "inputs data (batch, 1, 28, 28)" in out and "outputs prob (batch, 10)" in out
    assert "TorchScript" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.caffemodel", "lenet.onnx", "lenet.pt"]
    names = check_onnx(tmp_path / "lenet.onnx", net, "lenet")
    assert names == ["prob"]
    check_torchscript(tmp_path / "lenet.pt", net, "lenet", names)


@needs_onnx
@pytest.mark.parametrize("key", ["caffenet", "googlenet"])
def test_deploy_nets_onnx(caffe_zoo, tmp_path, key):
    net = random_net(caffe_zoo, key)
    logits = NETS[key][2]
    info = export.export_onnx(net, tmp_path / f"{key}.onnx", outputs=[logits, "prob"])
    assert info.opset == export.DEFAULT_OPSET and info.external_data is None
    assert info.inputs == {"data": ("batch", *NETS[key][1])}
    assert info.outputs == {logits: ("batch", 1000), "prob": ("batch", 1000)}
    names = check_onnx(tmp_path / f"{key}.onnx", net, key)
    assert names == [logits, "prob"]
    x = batch(NETS[key][1], 2, 1)
    assert net.forward(data=x)["prob"].max() > 0.05  # far from uniform (1e-3): the weights matter


@pytest.mark.parametrize("key", ["caffenet", "googlenet"])
def test_deploy_nets_torchscript(caffe_zoo, tmp_path, key):
    net = random_net(caffe_zoo, key)
    info = export.export_torchscript(net, tmp_path / f"{key}.pt", outputs=[NETS[key][2], "prob"])
    assert info.format == "torchscript" and info.outputs["prob"] == ("batch", 1000)
    check_torchscript(tmp_path / f"{key}.pt", net, key, [NETS[key][2], "prob"])


def test_netforward_is_the_net(caffe_zoo):
    """The wrapper runs the net's own layers: a weight change in the net shows in it."""
    net = random_net(caffe_zoo, "lenet")
    module = export.NetForward(net)
    x = batch((1, 28, 28), 2, 5)
    (a,) = module(torch.from_numpy(x))
    np.testing.assert_array_equal(a.detach().numpy(), net.forward(data=x)["prob"])
    net.params["ip2"][1].data[...] += 1.0
    (b,) = module(torch.from_numpy(x))
    np.testing.assert_array_equal(b.detach().numpy(), net.forward(data=x)["prob"])
    assert not np.array_equal(a.detach().numpy(), b.detach().numpy())


def test_refuses_data_layers(caffe_zoo, tmp_path, capsys):
    """A net whose data comes from outside the graph: the error names the layer; nothing is written."""
    model = tmp_path / "dummy.prototxt"
    model.write_text(
        'layer { name: "noise" type: "DummyData" top: "data" '
        'dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "gaussian" } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 4 } }\n'
    )
    rc = cli.main(["export", "--model", str(model), "--torchscript", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "layer 'noise' (DummyData)" in err and "cannot be exported" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dummy.prototxt"]
    net = caffe.Net(str(caffe_zoo / "BVLC__caffe" / NETS["lenet"][0]), caffe.TEST)
    with pytest.raises(ConfigError, match="'nope' is not a blob"):
        export.NetForward(net, outputs=["nope"])


def test_command_needs_an_output(caffe_zoo, capsys):
    model = caffe_zoo / "BVLC__caffe" / NETS["lenet"][0]
    assert cli.main(["export", "--model", str(model)]) == 1
    assert "give --onnx OUT.onnx and/or --torchscript OUT.pt" in capsys.readouterr().err
    assert cli.main(["export", "--onnx", "x.onnx"]) == 1
    assert "--model" in capsys.readouterr().err


def _int_count(shape, start=0, end=None):
    """A layer helper that turns sizes into Python ints: the batch gets baked into a trace."""
    n = 1
    for d in tuple(shape)[start:end]:
        n *= int(d)
    return n


@needs_onnx
def test_baked_batch_is_caught(caffe_zoo, tmp_path, monkeypatch):
    """A layer fixing the batch size fails loudly (never a silently wrong file); --static_batch still exports."""
    from pipeline.layers import affine

    net = random_net(caffe_zoo, "lenet")
    monkeypatch.setattr(affine, "count", _int_count)  # InnerProduct's flatten now bakes the batch
    with pytest.raises(ConfigError, match="fixes the batch size of input 'data'"):
        export.export_onnx(net, tmp_path / "a.onnx")
    with pytest.raises(ConfigError, match="fixes the batch size in the trace"):
        export.export_torchscript(net, tmp_path / "a.pt")
    assert list(tmp_path.iterdir()) == []
    info = export.export_onnx(net, tmp_path / "a.onnx", dynamic_batch=False)
    assert info.inputs == {"data": (64, 1, 28, 28)} and info.outputs == {"prob": (64, 10)}
    ort = pytest.importorskip("onnxruntime")
    x = batch((1, 28, 28), 64, 9)
    (got,) = ort.InferenceSession(str(tmp_path / "a.onnx")).run(None, {"data": x})
    assert rel_err(got, net.forward(data=x)["prob"]) <= 1e-4
