"""The layer registry: every BVLC type is there, builds from a default LayerParameter with
``layer.type == key`` (Caffe's test_layer_factory), and is covered by a family's tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pipeline.layers  # noqa: F401  (fills the registry)
from pipeline.proto import caffe_pb2
from pipeline.registry import LAYERS

# Every non-data layer type BVLC Caffe registers, plus Input and DummyData.
BVLC_TYPES = """AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss Convolution Crop
Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HingeLoss Im2col InfogainLoss
InnerProduct Input LRN LSTM LSTMUnit Log MVN MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU
Reduction Reshape SPP Scale Sigmoid SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split Swish TanH
Threshold Tile""".split()

NEEDS = {
    "Clip": "clip_param { min: -1 max: 1 }",
    "Python": 'python_param { module: "pyloss" layer: "EuclideanLossLayer" }',
    "InnerProduct": "inner_product_param { num_output: 1 }",
    "Embed": "embed_param { num_output: 1 input_dim: 1 }",
    # fork layers (pipeline/layers/fork_*.py)
    "DetectionOutput": "detection_output_param { num_classes: 2 }",
    "MultiBoxLoss": "multibox_loss_param { num_classes: 2 }",
    "PriorBox": "prior_box_param { min_size: 30 }",
    "ROIPooling": "roi_pooling_param { pooled_h: 2 pooled_w: 2 }",
    "PSROIPooling": "psroi_pooling_param { spatial_scale: 1 output_dim: 1 group_size: 2 }",
}


def test_every_bvlc_type_is_registered():
    missing = sorted(set(BVLC_TYPES) - set(LAYERS))
    assert not missing, f"not registered: {missing}"


@pytest.mark.parametrize("key", sorted(LAYERS))
def test_builds_from_default_param_with_matching_type(key):
    from google.protobuf import text_format

    lp = text_format.Parse(f'name: "x" type: "{key}" {NEEDS.get(key, "")}', caffe_pb2.LayerParameter())
    layer = LAYERS.get(key).from_param(lp, caffe_pb2.TRAIN)
    assert layer.type == key


TEST_DIR = Path(__file__).parent


def test_every_type_has_tests_in_a_family_file():
    text = "\n".join(p.read_text() for p in TEST_DIR.glob("test_*.py") if p.name != "test_registry.py")
    text += (TEST_DIR.parent / "test_net.py").read_text()
    untested = [k for k in LAYERS if not re.search(rf"""['"]{re.escape(k)}['"]""", text)]
    assert not untested, f"no layer test names these types: {untested}"
