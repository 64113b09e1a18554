"""Prototxt reading: every real Caffe file, round trips, and errors that say where."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from conftest import caffe_zoo_dir
from pipeline.errors import ParseError
from pipeline.formats import prototxt
from pipeline.proto import caffe_pb2

ZOO = caffe_zoo_dir()
ZOO_FILES = sorted(ZOO.rglob("*.prototxt")) if ZOO else []


def _id(p):
    return str(p.relative_to(ZOO)) if ZOO else str(p)


@pytest.mark.parametrize("path", ZOO_FILES, ids=_id)
def test_every_caffe_zoo_prototxt_parses_upgrades_and_round_trips(path):
    kind, msg = prototxt.read_any(path)
    # Kind is told apart automatically; solver files are named *solver*.
    assert kind == ("solver" if "solver" in path.name else "net")
    if kind == "net":
        assert len(msg.layer) > 0 and len(msg.layers) == 0  # upgraded to today's format
    text = prototxt.to_text(msg)
    again = text_format.Parse(text, type(msg)())
    assert again == msg
    assert prototxt.to_text(again) == text


def test_caffe_zoo_is_walked():
    if not ZOO:
        pytest.skip("../shared/caffe-zoo is not present beside the checkout")
    assert len(ZOO_FILES) >= 50


def test_comments_single_quotes_and_both_block_forms(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(
        "# a comment\n"
        "name: 'quoted'  # trailing comment\n"
        "layer { name: \"a\" type: 'Input' top: 'data'\n"
        "  input_param: { shape { dim: [1, 3, 4, 4] } } }\n"
    )
    net = prototxt.read_net(p)
    assert net.name == "quoted"
    assert net.layer[0].type == "Input"
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 4, 4]


def _error(tmp_path, text, name="bad.prototxt", reader=prototxt.read_net):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ParseError) as ei:
        reader(p)
    err = ei.value
    assert err.path == str(p)
    assert str(p) in str(err)
    return err


def test_unknown_field_names_file_line_and_field(tmp_path):
    err = _error(tmp_path, 'name: "x"\nlayer {\n  name: "c"\n  type: "Convolution"\n  convolution_parm { }\n}\n')
    assert (err.line, err.column) == (5, 3)
    assert "convolution_parm" in err.detail and "LayerParameter" in err.detail
    assert f"{err.path}:5:3:" in str(err)


def test_fork_field_says_which_fork(tmp_path):
    err = _error(tmp_path, 'layer {\n  name: "r"\n  type: "Region"\n  region_param { classes: 20 }\n}\n')
    assert err.line == 4
    assert "region_param" in err.detail and "YOLO" in err.detail and "does not support" in err.detail


def test_bad_enum_value(tmp_path):
    err = _error(tmp_path, 'layer {\n  name: "p"\n  type: "Pooling"\n  pooling_param {\n    pool: MAXIMUM\n  }\n}\n')
    assert err.line == 5
    assert "MAXIMUM" in err.detail and "PoolMethod" in err.detail


def test_wrong_value_type(tmp_path):
    err = _error(tmp_path, 'layer {\n  name: "c"\n  convolution_param { num_output: "many" }\n}\n')
    assert err.line == 3
    assert "num_output" in err.detail or "integer" in err.detail.lower()


def test_unclosed_brace_points_at_the_opening(tmp_path):
    err = _error(tmp_path, 'name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n')
    assert err.line == 2
    assert "never closed" in err.detail


def test_extra_closing_brace(tmp_path):
    err = _error(tmp_path, 'name: "x"\nlayer {\n  name: "a"\n}\n}\n')
    assert err.line == 5
    assert "'}'" in err.detail


def test_missing_file_and_binary_given_as_text(tmp_path):
    with pytest.raises(ParseError, match="no such file"):
        prototxt.read_net(tmp_path / "nope.prototxt")
    p = tmp_path / "model.caffemodel"
    p.write_bytes(b"\x0a\x03abc\xff\xfe\x00")
    with pytest.raises(ParseError, match="binary"):
        prototxt.read_net(p)


def test_solver_errors_name_line_too(tmp_path):
    err = _error(tmp_path, 'base_lr: 0.01\nlr_policy: "step"\nmomentum: fast\n', "s.prototxt", prototxt.read_solver)
    assert err.line == 3


def test_detect_kind():
    assert prototxt.detect_kind('base_lr: 0.1 net: "x.prototxt"') == "solver"
    assert prototxt.detect_kind('layer { name: "a" }') == "net"
    assert prototxt.detect_kind('name: "only a name"') == "net"


def test_write_text_round_trip(tmp_path):
    net = caffe_pb2.NetParameter(name="n")
    lp = net.layer.add(name="fc", type="InnerProduct", bottom=["x"], top=["y"])
    lp.inner_product_param.num_output = 10
    p = tmp_path / "out.prototxt"
    prototxt.write_text(net, p)
    assert prototxt.read_net(p) == net
    assert not list(tmp_path.glob(".*tmp"))
