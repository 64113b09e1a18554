"""The installed commands: flags in Caffe's spellings, upgrade tools, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import text_format

from pipeline.commands import cli
from pipeline.commands.flags import normalize_flags
from pipeline.formats import binary, prototxt
from pipeline.proto import caffe_pb2

BIN = Path(sys.executable).parent


def _run(cmd, *args):
    exe = BIN / cmd
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline", cmd]
    return subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def test_gflags_spellings_are_normalized():
    assert normalize_flags(["-solver", "s.prototxt", "-gpu=0", "--weights=w", "-x"]) == [
        "--solver", "s.prototxt", "--gpu=0", "--weights=w", "-x",
    ]


def test_commands_not_landed_yet_say_so_and_exit_2(capsys):
    assert cli.run_command("pipeline x", cli._not_yet("pipeline x", "lands later"), []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not implemented yet" in err[0]


def test_unknown_command_lists_the_available_ones(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err and "upgrade_net_proto_text" in err


LEGACY_INPUT = """name: "legacy"
input: "data"
input_dim: 10
input_dim: 3
input_dim: 227
input_dim: 227
layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
"""

EXPECTED_INPUT = """name: "legacy"
layer {
  name: "input"
  type: "Input"
  top: "data"
  input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } }
}
layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
"""


def test_upgrade_net_proto_text_on_legacy_input_dim(tmp_path):
    src, dst = tmp_path / "old.prototxt", tmp_path / "new.prototxt"
    src.write_text(LEGACY_INPUT)
    r = _run("upgrade_net_proto_text", src, dst)
    assert r.returncode == 0, r.stderr
    got = prototxt.read_net(dst, upgrade=False)
    assert got == text_format.Parse(EXPECTED_INPUT, caffe_pb2.NetParameter())


EXPECTED_LENET_HEAD = """
layer {
  name: "mnist" type: "Data" top: "data" top: "label"
  include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB }
}
layer {
  name: "mnist" type: "Data" top: "data" top: "label"
  include { phase: TEST stage: "test-on-test-set" }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_test_lmdb" batch_size: 100 backend: LMDB }
}
layer {
  name: "mnist" type: "Data" top: "data" top: "label"
  include { phase: TEST stage: "test-on-train-set" }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 100 backend: LMDB }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 }
  param { lr_mult: 2 }
  convolution_param {
    num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" }
  }
}
"""


def test_upgrade_solver_proto_text_on_lenet_consolidated(tmp_path, caffe_zoo):
    src = caffe_zoo / "BVLC__caffe/examples/mnist/lenet_consolidated_solver.prototxt"
    dst = tmp_path / "solver.prototxt"
    r = _run("upgrade_solver_proto_text", src, dst)
    assert r.returncode == 0, r.stderr
    solver = prototxt.read_solver(dst, upgrade=False)
    net = solver.net_param
    assert len(net.layers) == 0 and len(net.layer) > 0
    head = text_format.Parse(EXPECTED_LENET_HEAD, caffe_pb2.NetParameter())
    assert list(net.layer[: len(head.layer)]) == list(head.layer)
    assert [lp.type for lp in net.layer[4:]] == [
        "Pooling", "Convolution", "Pooling", "InnerProduct", "ReLU", "InnerProduct",
        "Accuracy", "SoftmaxWithLoss",
    ]


def test_upgrade_net_proto_binary_keeps_weights(tmp_path):
    v1 = caffe_pb2.NetParameter(name="old")
    lay = v1.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT, bottom=["x"], top=["y"])
    lay.blobs_lr.extend([1, 2])
    lay.blobs.add().data.extend([1.0, 2.0, 3.0])
    src, dst = tmp_path / "old.caffemodel", tmp_path / "new.caffemodel"
    binary.write_binary(v1, src)
    r = _run("upgrade_net_proto_binary", src, dst)
    assert r.returncode == 0, r.stderr
    new = binary.read_caffemodel(dst, upgrade=False)
    assert len(new.layers) == 0 and new.layer[0].type == "InnerProduct"
    assert list(new.layer[0].blobs[0].data) == [1.0, 2.0, 3.0]
    assert [p.lr_mult for p in new.layer[0].param] == [1.0, 2.0]


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    src = tmp_path / "broken.prototxt"
    src.write_text("layer {\n  name: 'x'\n  bogus_field: 1\n}\n")
    r = _run("upgrade_net_proto_text", src, tmp_path / "out.prototxt")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{src}:3:3" in lines[0] and "bogus_field" in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.prototxt").exists()


def test_mixed_layer_and_layers_is_refused(tmp_path):
    src = tmp_path / "mixed.prototxt"
    src.write_text('layer { name: "a" type: "ReLU" }\nlayers { name: "b" type: RELU }\n')
    r = _run("upgrade_net_proto_text", src, tmp_path / "o.prototxt")
    assert r.returncode == 1 and str(src) in r.stderr and "layers" in r.stderr
