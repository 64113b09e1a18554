"""pipeline summary: shapes from the built net, parameters and multiply-adds from Caffe's formulas."""

from __future__ import annotations

from pipeline import TEST, Net
from pipeline.commands import cli
from pipeline.commands.summary import format_summary, summarize
from pipeline.formats import forks, prototxt


def conv_out(size, kernel, stride=1, pad=0):
    return (size + 2 * pad - kernel) // stride + 1


def pool_out(size, kernel, stride):  # Caffe rounds pooling up
    return -(-(size - kernel) // stride) + 1


def caffenet_expected(n=10):
    """CaffeNet layer by layer from its definition: (layer, params, multiply-adds)."""
    rows = []
    s = conv_out(227, 11, 4)  # 55
    rows.append(("conv1", 96 * 3 * 11 * 11 + 96, n * 96 * s * s * 3 * 11 * 11))
    s = pool_out(s, 3, 2)  # 27
    rows.append(("conv2", 256 * 48 * 5 * 5 + 256, n * 256 * s * s * 48 * 5 * 5))  # group 2
    s = pool_out(s, 3, 2)  # 13
    rows.append(("conv3", 384 * 256 * 9 + 384, n * 384 * s * s * 256 * 9))
    rows.append(("conv4", 384 * 192 * 9 + 384, n * 384 * s * s * 192 * 9))
    rows.append(("conv5", 256 * 192 * 9 + 256, n * 256 * s * s * 192 * 9))
    s = pool_out(s, 3, 2)  # 6
    k = 256 * s * s
    rows.append(("fc6", 4096 * k + 4096, n * k * 4096))
    rows.append(("fc7", 4096 * 4096 + 4096, n * 4096 * 4096))
    rows.append(("fc8", 1000 * 4096 + 1000, n * 4096 * 1000))
    return rows


def test_caffenet_rows_and_totals(caffe_zoo):
    net = Net(caffe_zoo / "BVLC__caffe/models/bvlc_reference_caffenet/deploy.prototxt", TEST)
    s = summarize(net)
    rows = {r.name: r for r in s.rows}
    expected = caffenet_expected()
    for name, params, macs in expected:
        assert (rows[name].params, rows[name].macs) == (params, macs), name
    others = [r for r in s.rows if r.name not in {e[0] for e in expected}]
    assert all(r.params == 0 and r.macs == 0 for r in others)  # pooling, LRN, ReLU, Dropout, Softmax
    assert s.total_params == s.learnable_params == sum(p for _, p, _ in expected) == 60_965_224
    assert s.total_macs == sum(m for _, _, m in expected)
    assert s.batch == 10
    assert rows["conv2"].bottoms == [("norm1", (10, 96, 27, 27))]  # CaffeNet pools before LRN
    assert rows["conv2"].tops == [("conv2", (10, 256, 27, 27))]
    assert rows["relu1"].tops == [("conv1", (10, 96, 55, 55))]
    assert rows["fc8"].tops == [("fc8", (10, 1000))]
    text = format_summary(s)
    assert text.splitlines()[-1] == (
        f"total: 60,965,224 parameters (60,965,224 learnable), {s.total_macs:,} multiply-adds per batch of 10 "
        f"({s.total_macs // 10:,} per item)")
    assert s.total_macs // 10 == 724_406_816


NET = """
name: "mix"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 dim: 5 dim: 5 } } }
layer { name: "up" type: "Deconvolution" bottom: "x" top: "up"
        convolution_param { num_output: 6 kernel_size: 4 stride: 2 group: 2 } }
layer { name: "sc" type: "Scale" bottom: "up" top: "sc" scale_param { bias_term: true } }
layer { name: "fa" type: "InnerProduct" bottom: "sc" top: "fa" param { name: "w" }
        inner_product_param { num_output: 3 bias_term: false } }
layer { name: "fb" type: "InnerProduct" bottom: "sc" top: "fb" param { name: "w" }
        inner_product_param { num_output: 3 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "fa" top: "fa" }
layer { name: "seq" type: "Input" top: "s" top: "c"
        input_param { shape { dim: 7 dim: 2 dim: 5 } shape { dim: 7 dim: 2 } } }
layer { name: "lstm" type: "LSTM" bottom: "s" bottom: "c" top: "h" recurrent_param { num_output: 8 } }
"""


def test_deconv_scale_shared_batchnorm_lstm(tmp_path):
    path = tmp_path / "mix.prototxt"
    path.write_text(NET)
    s = summarize(Net(path, TEST))
    rows = {r.name: r for r in s.rows}
    # Deconvolution: out (5 - 1) * 2 + 4 = 12; weight (C_in, C_out / group, 4, 4) = (4, 3, 4, 4)
    assert rows["up"].tops == [("up", (2, 6, 12, 12))]
    assert rows["up"].params == 4 * 3 * 16 + 6
    assert rows["up"].macs == (2 * 4 * 5 * 5) * (3 * 4 * 4)  # every input pixel scatters a kernel
    assert (rows["sc"].params, rows["sc"].macs) == (6 + 6, 2 * 6 * 12 * 12)
    k = 6 * 12 * 12
    assert (rows["fa"].params, rows["fa"].macs) == (3 * k, 2 * k * 3)
    assert (rows["fb"].params, rows["fb"].macs) == (3 * k, 2 * k * 3)  # shares fa's weights
    assert (rows["bn"].params, rows["bn"].macs) == (3 + 3 + 1, 0)
    # LSTM: W_xc (4H, I), b_c (4H), W_hc (4H, H); T * N steps of both products
    h, i, t, n = 8, 5, 7, 2
    assert rows["lstm"].params == 4 * h * i + 4 * h + 4 * h * h
    assert rows["lstm"].macs == t * n * (4 * h * i + 4 * h * h)
    lstm_params = 4 * h * i + 4 * h + 4 * h * h
    assert s.total_params == 198 + 12 + 3 * k + 7 + lstm_params  # the shared weight once
    assert s.learnable_params == s.total_params - 7  # BatchNorm's statistics are not learnt
    assert s.total_macs == sum(r.macs for r in s.rows)


def test_fork_types_are_marked(caffe_zoo, monkeypatch):
    monkeypatch.setitem(forks.FORK_LAYER_TYPES, "ReLU", "a test fork")
    s = summarize(Net(caffe_zoo / "BVLC__caffe/examples/mnist/lenet.prototxt", TEST))
    rows = {r.name: r for r in s.rows}
    assert rows["relu1"].note == "fork: a test fork" and rows["conv1"].note == ""
    assert "ReLU (fork: a test fork)" in format_summary(s)


def test_command_prints_table(caffe_zoo, capsys):
    net = caffe_zoo / "BVLC__caffe/examples/mnist/lenet.prototxt"
    assert cli.main(["summary", str(net)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "LeNet (phase TEST, 9 layers)"
    assert out[1].split() == ["layer", "type", "bottoms", "->", "tops", "params", "multiply-adds"]
    conv1 = out[3].split()
    # 20 * 1 * 5 * 5 + 20 parameters; 64 * 20 * 24 * 24 outputs, 25 multiply-adds each
    assert conv1 == ["conv1", "Convolution", "data", "64x1x28x28", "->", "conv1", "64x20x24x24", "520",
                     f"{64 * 20 * 24 * 24 * 25:,}"]
    assert out[-1] == ("total: 431,080 parameters (431,080 learnable), 146,752,000 multiply-adds per batch of 64 "
                       "(2,293,000 per item)")


def test_command_phase_and_errors(caffe_zoo, tmp_path, capsys):
    net = caffe_zoo / "BVLC__caffe/examples/mnist/lenet.prototxt"
    assert cli.main(["summary", str(net), "--phase", "TRAIN"]) == 0
    assert capsys.readouterr().out.startswith("LeNet (phase TRAIN")
    assert cli.main(["summary", str(net), "--phase", "VAL"]) == 1
    assert 'phase must be "TRAIN" or "TEST"' in capsys.readouterr().err
    bad = tmp_path / "bad.prototxt"
    param = prototxt.read_net(net)
    param.layer[1].convolution_param.kernel_size[0] = 40  # larger than the 28x28 input
    prototxt.write_text(param, bad)
    assert cli.main(["summary", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conv1" in err[0]
