"""Tests for pipeline.formats.upgrade: legacy Caffe nets and solvers -> today's format.

Every expected result is written out by hand as prototxt text (what Caffe's
``upgrade_net_proto_text`` / ``upgrade_solver_proto_text`` would print), and the
upgraded message must equal it exactly.
"""

from __future__ import annotations

import os

import pytest
from google.protobuf import text_format

from pipeline.errors import UpgradeError
from pipeline.formats.upgrade import net_needs_upgrade, solver_needs_upgrade, upgrade_net, upgrade_solver
from pipeline.proto import caffe_pb2

ZOO = "/work/shared/caffe-zoo/BVLC__caffe"
LENET_SOLVER = os.path.join(ZOO, "examples/mnist/lenet_consolidated_solver.prototxt")


def net(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def solver(text: str) -> caffe_pb2.SolverParameter:
    return text_format.Parse(text, caffe_pb2.SolverParameter())


def assert_same(got, expected):
    """Equal messages; on failure show both as text."""
    assert got == expected, (f"--- got ---\n{text_format.MessageToString(got)}\n"
                             f"--- expected ---\n{text_format.MessageToString(expected)}")


def upgraded(text: str, source="test.prototxt"):
    n = net(text)
    notes = upgrade_net(n, source)
    return n, notes


# --------------------------------------------------------------------------- (1) lenet consolidated

LENET_EXPECTED = """
name: "LeNet"
layer {
  name: "mnist" type: "Data" top: "data" top: "label"
  data_param { source: "examples/mnist/mnist_train_lmdb" backend: LMDB batch_size: 64 }
  transform_param { scale: 0.00390625 }
  include { phase: TRAIN }
}
layer {
  name: "mnist" type: "Data" top: "data" top: "label"
  data_param { source: "examples/mnist/mnist_test_lmdb" backend: LMDB batch_size: 100 }
  transform_param { scale: 0.00390625 }
  include { phase: TEST stage: "test-on-test-set" }
}
layer {
  name: "mnist" type: "Data" top: "data" top: "label"
  data_param { source: "examples/mnist/mnist_train_lmdb" backend: LMDB batch_size: 100 }
  transform_param { scale: 0.00390625 }
  include { phase: TEST stage: "test-on-train-set" }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param {
    num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" }
  }
}
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param {
    num_output: 50 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" }
  }
}
layer {
  name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer {
  name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


@pytest.mark.skipif(not os.path.exists(LENET_SOLVER), reason="BVLC caffe zoo not available")
def test_lenet_consolidated_solver_inline_v1_net():
    with open(LENET_SOLVER) as f:
        s = solver(f.read())
    assert solver_needs_upgrade(s)
    notes = upgrade_solver(s, LENET_SOLVER)
    expected = net(LENET_EXPECTED)
    got = [(l.name, l.type, [(p.lr_mult, p.decay_mult) for p in l.param]) for l in s.net_param.layer]
    want = [(l.name, l.type, [(p.lr_mult, p.decay_mult) for p in l.param]) for l in expected.layer]
    assert got == want
    assert_same(s.net_param, expected)
    assert len(s.net_param.layers) == 0
    assert any("lenet_consolidated_solver.prototxt (net_param)" in n and "12 V1" in n for n in notes)
    # The solver's own fields are untouched and nothing is left to upgrade.
    assert s.base_lr == pytest.approx(0.01) and list(s.test_iter) == [100, 600]
    assert not s.HasField("type") and not s.HasField("solver_type")
    assert not solver_needs_upgrade(s)
    assert upgrade_solver(s, LENET_SOLVER) == []


# --------------------------------------------------------------------------- (2) legacy inputs

INPUT_CASES = [
    ("input_dim",
     'name: "n" input: "data" input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227\n'
     'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }',
     'name: "n"\n'
     'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } } }\n'
     'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }'),
    ("input_shape",
     'input: "data" input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }\n'
     'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }',
     'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }\n'
     'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }'),
    ("two_inputs_dim",
     'input: "a" input: "b" input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5 '
     'input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1\n'
     'layer { name: "x" type: "Eltwise" bottom: "a" bottom: "a" top: "x" }',
     'layer { name: "input" type: "Input" top: "a" top: "b"\n'
     '  input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } shape { dim: 2 dim: 1 dim: 1 dim: 1 } } }\n'
     'layer { name: "x" type: "Eltwise" bottom: "a" bottom: "a" top: "x" }'),
    ("two_inputs_shape",
     'input: "a" input_shape { dim: 4 dim: 6 } input: "b" input_shape { dim: 4 }',
     'layer { name: "input" type: "Input" top: "a" top: "b" input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }'),
    ("shape_wins_over_dim",
     'input: "a" input_shape { dim: 7 } input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4',
     'layer { name: "input" type: "Input" top: "a" input_param { shape { dim: 7 } } }'),
    ("no_shape_dropped",
     'name: "from_caffemodel" input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }',
     'name: "from_caffemodel" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }'),
]


@pytest.mark.parametrize("legacy,expected", [c[1:] for c in INPUT_CASES], ids=[c[0] for c in INPUT_CASES])
def test_legacy_input_becomes_input_layer(legacy, expected):
    n = net(legacy)
    assert net_needs_upgrade(n)
    notes = upgrade_net(n, "deploy.prototxt")
    assert_same(n, net(expected))
    assert notes and all(note.startswith("deploy.prototxt: ") for note in notes)
    assert not net_needs_upgrade(n)


@pytest.mark.parametrize("legacy,needle", [
    ('input: "a" input_dim: 1 input_dim: 2 input_dim: 3', "4 input_dim values"),
    ('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4', "8 input_dim values"),
    ('input: "a" input: "b" input_shape { dim: 1 }', "one input_shape per input"),
])
def test_legacy_input_bad_dims_refused(legacy, needle):
    with pytest.raises(UpgradeError) as err:
        upgrade_net(net(legacy), "deploy.prototxt")
    assert "deploy.prototxt" in str(err.value) and needle in str(err.value)


def test_v1_net_with_legacy_input():
    n, _ = upgraded('input: "data" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2\n'
                    'layers { name: "r" type: RELU bottom: "data" top: "r" }')
    assert_same(n, net('layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }\n'
                       'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }'))


# --------------------------------------------------------------------------- (3) V0 nets

V0_NET = """
name: "tiny_v0"
layers {
  layer {
    name: "data" type: "data" source: "train_leveldb" meanfile: "mean.binaryproto"
    batchsize: 32 cropsize: 27 mirror: true scale: 0.5 rand_skip: 7
  }
  top: "data" top: "label"
}
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer {
    name: "conv1" type: "conv" num_output: 16 kernelsize: 5 stride: 2 group: 2 biasterm: false
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0.1 }
    blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 } bottom: "pad2" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 k: 2 } bottom: "pool1" top: "norm1" }
layers { layer { name: "drop1" type: "dropout" dropout_ratio: 0.3 } bottom: "norm1" top: "norm1" }
layers {
  layer { name: "ip1" type: "innerproduct" num_output: 10 weight_filler { type: "xavier" } blobs_lr: 1 blobs_lr: 2 }
  bottom: "norm1" top: "ip1"
}
layers { layer { name: "loss" type: "softmax_loss" } bottom: "ip1" bottom: "label" top: "loss" }
"""

V0_EXPECTED = """
name: "tiny_v0"
layer {
  name: "data" type: "Data" top: "data" top: "label"
  data_param { source: "train_leveldb" batch_size: 32 rand_skip: 7 }
  transform_param { scale: 0.5 mean_file: "mean.binaryproto" crop_size: 27 mirror: true }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 16 bias_term: false pad: 2 kernel_size: 5 stride: 2 group: 2
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0.1 }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: AVE pad: 1 kernel_size: 3 stride: 2 }
}
layer {
  name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
  lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 k: 2 }
}
layer { name: "drop1" type: "Dropout" bottom: "norm1" top: "norm1" dropout_param { dropout_ratio: 0.3 } }
layer {
  name: "ip1" type: "InnerProduct" bottom: "norm1" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } }
}
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def test_v0_net_upgrades_to_v2():
    n = net(V0_NET)
    assert net_needs_upgrade(n)
    notes = upgrade_net(n, "old.prototxt")
    assert_same(n, net(V0_EXPECTED))
    text = "\n".join(notes)
    assert "V0 layer definitions" in text and "V1 'layers'" in text
    assert "padding layer 'pad1' (#1) folded into layer 'conv1'" in text
    assert "padding layer 'pad2' (#4) folded into layer 'pool1'" in text


def test_v0_net_with_input_and_other_data_layers():
    n, _ = upgraded('input: "img" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
                    'layers { layer { name: "p" type: "padding" pad: 1 } bottom: "img" top: "p" }\n'
                    'layers { layer { name: "c" type: "conv" num_output: 4 kernelsize: 3 } bottom: "p" top: "c" }\n'
                    'layers { layer { name: "cat" type: "concat" concat_dim: 1 } bottom: "c" bottom: "img" top: "cat" }\n'
                    'layers { layer { name: "w" type: "window_data" source: "w.txt" batchsize: 4 det_fg_threshold: 0.6 '
                    'det_bg_threshold: 0.4 det_fg_fraction: 0.3 det_context_pad: 16 det_crop_mode: "square" } top: "w" }\n'
                    'layers { layer { name: "i" type: "images" source: "l.txt" batchsize: 2 shuffle_images: true '
                    'new_height: 5 new_width: 6 rand_skip: 1 } top: "i" }')
    assert_same(n, net(
        'layer { name: "input" type: "Input" top: "img" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
        'layer { name: "c" type: "Convolution" bottom: "img" top: "c" convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }\n'
        'layer { name: "cat" type: "Concat" bottom: "c" bottom: "img" top: "cat" concat_param { concat_dim: 1 } }\n'
        'layer { name: "w" type: "WindowData" top: "w" window_data_param { source: "w.txt" batch_size: 4 '
        'fg_threshold: 0.6 bg_threshold: 0.4 fg_fraction: 0.3 context_pad: 16 crop_mode: "square" } }\n'
        'layer { name: "i" type: "ImageData" top: "i" image_data_param { source: "l.txt" batch_size: 2 shuffle: true '
        'new_height: 5 new_width: 6 rand_skip: 1 } }'))


def test_v0_field_for_wrong_type_is_dropped_with_note():
    n, notes = upgraded('layers { layer { name: "r" type: "relu" num_output: 3 } top: "x" }')
    assert_same(n, net('layer { name: "r" type: "ReLU" top: "x" }'))
    assert any("'num_output' does not apply to type 'relu'" in note for note in notes)


@pytest.mark.parametrize("legacy,needle", [
    ('layers { layer { name: "f" type: "fancy" } top: "x" }', "unknown V0 layer type 'fancy'"),
    ('layers { layer { name: "d" type: "data" } top: "x" }\n'
     'layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }\n'
     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }', "only conv and pool layers"),
    ('layers { layer { name: "r" type: "relu" } bottom: "nowhere" top: "r" }', "bottom 'nowhere'"),
    ('layers { layer { name: "d" type: "data" } top: "x" }\n'
     'layers { name: "r" type: RELU bottom: "x" top: "x" }', "write all of them in one format"),
])
def test_v0_errors_name_file_and_layer(legacy, needle):
    with pytest.raises(UpgradeError) as err:
        upgrade_net(net(legacy), "old.prototxt")
    msg = str(err.value)
    assert msg.startswith("old.prototxt: ") and needle in msg and "layer '" in msg


# --------------------------------------------------------------------------- V1 details

V1_TYPES = {  # hand-written: enum name -> Caffe's V2 type string
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}


def test_v1_type_table_covers_the_enum():
    assert set(V1_TYPES) == set(caffe_pb2.V1LayerParameter.LayerType.keys())


@pytest.mark.parametrize("enum_name,type_string", sorted(V1_TYPES.items()))
def test_v1_type_names(enum_name, type_string):
    n, _ = upgraded(f'layers {{ name: "l" type: {enum_name} }}')
    assert n.layer[0].type == type_string and n.layer[0].HasField("type")


def test_v1_layer_fields_all_carried():
    n, _ = upgraded("""
      layers {
        name: "shared" type: INNER_PRODUCT bottom: "x" top: "y" top: "z"
        param: "w" param: "b" blob_share_mode: PERMISSIVE blob_share_mode: STRICT
        blobs_lr: 3 weight_decay: 0.5 weight_decay: 0 loss_weight: 2 loss_weight: 0
        include { phase: TRAIN stage: "s" } exclude { min_level: 2 } exclude { not_stage: "t" }
        inner_product_param { num_output: 7 bias_term: false }
        loss_param { ignore_label: 255 normalize: false }
        transform_param { mean_value: 104 mean_value: 117 }
        relu_param { negative_slope: 0.1 }
      }
      layers { type: SLICE slice_param { slice_dim: 1 slice_point: 2 } }""")
    assert_same(n, net("""
      layer {
        name: "shared" type: "InnerProduct" bottom: "x" top: "y" top: "z"
        param { name: "w" share_mode: PERMISSIVE lr_mult: 3 decay_mult: 0.5 }
        param { name: "b" share_mode: STRICT decay_mult: 0 }
        loss_weight: 2 loss_weight: 0
        include { phase: TRAIN stage: "s" } exclude { min_level: 2 } exclude { not_stage: "t" }
        inner_product_param { num_output: 7 bias_term: false }
        loss_param { ignore_label: 255 normalize: false }
        transform_param { mean_value: 104 mean_value: 117 }
        relu_param { negative_slope: 0.1 }
      }
      layer { type: "Slice" slice_param { slice_dim: 1 slice_point: 2 } }"""))
    assert not n.layer[1].HasField("name")


# --------------------------------------------------------------------------- data transformation

def test_v1_legacy_data_transform_fields_move():
    n, notes = upgraded("""
      layers { name: "d" type: DATA top: "d"
               data_param { source: "db" batch_size: 4 scale: 0.25 mean_file: "m" crop_size: 9 mirror: true } }
      layers { name: "i" type: IMAGE_DATA top: "i" image_data_param { source: "l" mirror: false } }
      layers { name: "w" type: WINDOW_DATA top: "w" window_data_param { crop_size: 3 }
               transform_param { crop_size: 3 mirror: true } }
      layers { name: "h" type: HDF5_DATA top: "h" hdf5_data_param { source: "h5" } }""")
    assert_same(n, net("""
      layer { name: "d" type: "Data" top: "d" data_param { source: "db" batch_size: 4 }
              transform_param { scale: 0.25 mean_file: "m" crop_size: 9 mirror: true } }
      layer { name: "i" type: "ImageData" top: "i" image_data_param { source: "l" } transform_param { mirror: false } }
      layer { name: "w" type: "WindowData" top: "w" window_data_param { } transform_param { crop_size: 3 mirror: true } }
      layer { name: "h" type: "HDF5Data" top: "h" hdf5_data_param { source: "h5" } }"""))
    assert sum("to transform_param" in note for note in notes) == 3


def test_v2_data_layer_legacy_fields_move_too():
    n = net('layer { name: "d" type: "Data" top: "d" data_param { source: "db" mean_file: "m" mirror: true } }\n'
            'layer { name: "r" type: "ReLU" bottom: "d" top: "d" }')
    assert net_needs_upgrade(n)
    notes = upgrade_net(n, "v2.prototxt")
    assert_same(n, net('layer { name: "d" type: "Data" top: "d" data_param { source: "db" } '
                       'transform_param { mean_file: "m" mirror: true } }\n'
                       'layer { name: "r" type: "ReLU" bottom: "d" top: "d" }'))
    assert notes == ["v2.prototxt: layer 'd' (#0): moved legacy data_param field(s) mean_file, mirror to transform_param"]


def test_conflicting_transform_fields_refused():
    legacy = 'layer { name: "d" type: "Data" data_param { scale: 0.5 } transform_param { scale: 0.25 } }'
    with pytest.raises(UpgradeError) as err:
        upgrade_net(net(legacy), "v2.prototxt")
    assert "v2.prototxt" in str(err.value) and "layer 'd'" in str(err.value) and "transform_param.scale" in str(err.value)


# --------------------------------------------------------------------------- (4) layer + layers

def test_mixed_layer_and_layers_refused():
    mixed = net('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')
    with pytest.raises(UpgradeError) as err:
        upgrade_net(mixed, "models/mixed.prototxt")
    msg = str(err.value)
    assert "models/mixed.prototxt" in msg and "use only one of them" in msg
    assert "'layer'" in msg and "'layers'" in msg


# --------------------------------------------------------------------------- (5) solvers

@pytest.mark.parametrize("enum_name,type_string", [
    ("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"),
    ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam"),
])
def test_solver_type_upgrade(enum_name, type_string):
    s = solver(f'base_lr: 0.1 solver_type: {enum_name}')
    assert solver_needs_upgrade(s)
    notes = upgrade_solver(s, "solver.prototxt")
    assert_same(s, solver(f'base_lr: 0.1 type: "{type_string}"'))
    assert len(notes) == 1 and notes[0].startswith("solver.prototxt: ") and enum_name in notes[0]
    assert not solver_needs_upgrade(s) and upgrade_solver(s) == []


def test_solver_type_conflict_refused():
    with pytest.raises(UpgradeError) as err:
        upgrade_solver(solver('solver_type: ADAM type: "SGD"'), "solver.prototxt")
    msg = str(err.value)
    assert "solver.prototxt" in msg and "ADAM" in msg and '"SGD"' in msg and "keep only 'type'" in msg


def test_solver_type_agreeing_with_type_accepted():
    s = solver('solver_type: NESTEROV type: "Nesterov"')
    upgrade_solver(s)
    assert_same(s, solver('type: "Nesterov"'))


def test_solver_inline_nets_upgraded():
    s = solver('train_net_param { layers { name: "r" type: RELU } }\n'
               'test_net_param { input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 }\n'
               'test_net_param { layer { name: "ok" type: "ReLU" } }')
    assert solver_needs_upgrade(s)
    notes = upgrade_solver(s, "s.prototxt")
    assert_same(s, solver('train_net_param { layer { name: "r" type: "ReLU" } }\n'
                          'test_net_param { layer { name: "input" type: "Input" top: "x" '
                          'input_param { shape { dim: 1 dim: 1 dim: 1 dim: 1 } } } }\n'
                          'test_net_param { layer { name: "ok" type: "ReLU" } }'))
    assert any(n.startswith("s.prototxt (train_net_param): ") for n in notes)
    assert any(n.startswith("s.prototxt (test_net_param[0]): ") for n in notes)
    with pytest.raises(UpgradeError, match=r"s\.prototxt \(net_param\)"):
        upgrade_solver(solver('net_param { layer { type: "ReLU" } layers { type: RELU } }'), "s.prototxt")


# --------------------------------------------------------------------------- (6) BatchNorm

def test_batchnorm_three_params_frozen():
    n = net('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 name: "m" } param { decay_mult: 2 } param { } }\n'
            'layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } }\n'
            'layer { name: "bn3" type: "BatchNorm" }\n'
            'layer { name: "sc" type: "Scale" param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }')
    assert net_needs_upgrade(n)
    notes = upgrade_net(n, "bn.prototxt")
    assert_same(n, net(
        'layer { name: "bn" type: "BatchNorm" param { name: "m" lr_mult: 0 decay_mult: 0 } '
        'param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 } }\n'
        'layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } }\n'
        'layer { name: "bn3" type: "BatchNorm" }\n'
        'layer { name: "sc" type: "Scale" param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }'))
    assert notes == ["bn.prototxt: BatchNorm layer 'bn' (#0): set lr_mult and decay_mult of its 3 param specs to 0"]
    assert not net_needs_upgrade(n)


# --------------------------------------------------------------------------- (7) idempotence

IDEMPOTENCE_CASES = {
    "v0": V0_NET,
    "v2_lenet": LENET_EXPECTED,
    "v1": 'layers { name: "c" type: CONVOLUTION blobs_lr: 1 convolution_param { num_output: 2 } }',
    "input": INPUT_CASES[2][1],
    "batchnorm": 'layer { name: "bn" type: "BatchNorm" param { } param { } param { } }',
    "data": 'layer { name: "d" type: "Data" data_param { crop_size: 4 } }',
}


@pytest.mark.parametrize("text", list(IDEMPOTENCE_CASES.values()), ids=list(IDEMPOTENCE_CASES))
def test_upgrade_is_idempotent(text):
    n = net(text)
    upgrade_net(n)
    once = caffe_pb2.NetParameter()
    once.CopyFrom(n)
    assert not net_needs_upgrade(n)
    assert upgrade_net(n) == []
    assert_same(n, once)
    assert n.SerializeToString(deterministic=True) == once.SerializeToString(deterministic=True)


def test_current_net_untouched():
    n = net(LENET_EXPECTED)
    before = n.SerializeToString(deterministic=True)
    assert not net_needs_upgrade(n) and upgrade_net(n) == []
    assert n.SerializeToString(deterministic=True) == before


# --------------------------------------------------------------------------- (8) binary V1 with blobs

def test_v1_binary_blobs_carried():
    v1 = net("""
      name: "weights"
      layers {
        name: "conv" type: CONVOLUTION blobs_lr: 1 blobs_lr: 2
        blobs { num: 2 channels: 1 height: 1 width: 2 data: 1.5 data: -2 data: 3.25 data: 0 }
        blobs { num: 1 channels: 1 height: 1 width: 2 data: 0.5 data: 7 }
        convolution_param { num_output: 2 kernel_size: 1 }
      }
      layers { name: "fc" type: INNER_PRODUCT blobs { shape { dim: 1 dim: 3 } double_data: 1e-300 double_data: 2 double_data: 3 } }""")
    wire = v1.SerializeToString()
    parsed = caffe_pb2.NetParameter.FromString(wire)
    assert len(parsed.layers) == 2
    upgrade_net(parsed, "old.caffemodel")
    assert_same(parsed, net("""
      name: "weights"
      layer {
        name: "conv" type: "Convolution" param { lr_mult: 1 } param { lr_mult: 2 }
        blobs { num: 2 channels: 1 height: 1 width: 2 data: 1.5 data: -2 data: 3.25 data: 0 }
        blobs { num: 1 channels: 1 height: 1 width: 2 data: 0.5 data: 7 }
        convolution_param { num_output: 2 kernel_size: 1 }
      }
      layer { name: "fc" type: "InnerProduct" blobs { shape { dim: 1 dim: 3 } double_data: 1e-300 double_data: 2 double_data: 3 } }"""))
    assert list(parsed.layer[0].blobs[0].data) == [1.5, -2.0, 3.25, 0.0]
    assert list(parsed.layer[1].blobs[0].double_data) == [1e-300, 2.0, 3.0]
    # And the upgraded message round-trips through the wire format unchanged.
    assert caffe_pb2.NetParameter.FromString(parsed.SerializeToString()) == parsed
