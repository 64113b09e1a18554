"""BVLC Caffe's schema (master, post-1.0 fields included) as literal Python data.

Transcribed by hand from the project reference (caffe-semantics.md section 2:
2a top-level messages, 2b LayerParameter, 2c per-layer messages, 2d legacy V1/V0
layers), which was itself extracted from BVLC ``src/caffe/proto/caffe.proto``.
Nothing here is parsed from that file at test time; tests/formats/test_schema.py
compares this table with ``pipeline.proto.caffe_pb2``.

Notation. Each message maps to a list of ``Field`` rows in the order the reference
gives them. ``type`` is a scalar name (int32, int64, uint32, float, double, bool,
string, bytes) or the referenced message/enum's name relative to the package:
top-level names as they are (``BlobShape``, ``Phase``), nested enums qualified by
their message (``ConvolutionParameter.Engine``). ``default`` is ``NO_DEFAULT``
when the field declares none; enum defaults are value names; float defaults are
written as Python floats and compared as float32.

Two nested enums are not spelled out in the reference's enum lists, only named as
field types: ``V1LayerParameter.DimCheckMode`` and ``V0LayerParameter.PoolMethod``.
Their values are BVLC's (STRICT=0/PERMISSIVE=1 and MAX=0/AVE=1/STOCHASTIC=2, the
same as ``ParamSpec.DimCheckMode`` and ``PoolingParameter.PoolMethod``).
"""

from __future__ import annotations

from typing import NamedTuple

PACKAGE = "caffe"

NO_DEFAULT = None

OPTIONAL = "optional"
REPEATED = "repeated"
REQUIRED = "required"


class Field(NamedTuple):
    name: str
    number: int
    type: str
    label: str = OPTIONAL
    packed: bool = False
    default: object = NO_DEFAULT


def opt(name, number, type_, default=NO_DEFAULT):
    """An optional field, with its declared default if it has one."""
    return Field(name, number, type_, OPTIONAL, False, default)


def rep(name, number, type_, packed=False):
    """A repeated field (packed only where the schema says so)."""
    return Field(name, number, type_, REPEATED, packed, NO_DEFAULT)


def req(name, number, type_):
    """A required field."""
    return Field(name, number, type_, REQUIRED, False, NO_DEFAULT)


_ENGINE = {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}
_POOL_METHOD = {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}
_DIM_CHECK_MODE = {"STRICT": 0, "PERMISSIVE": 1}

# Every enum, keyed by its name relative to the package; values in the order the
# reference lists them.
ENUMS: dict[str, dict[str, int]] = {
    # 2a
    "Phase": {"TRAIN": 0, "TEST": 1},
    "FillerParameter.VarianceNorm": {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2},
    "SolverParameter.SnapshotFormat": {"HDF5": 0, "BINARYPROTO": 1},
    "SolverParameter.SolverMode": {"CPU": 0, "GPU": 1},
    "SolverParameter.SolverType": {
        "SGD": 0, "NESTEROV": 1, "ADAGRAD": 2, "RMSPROP": 3, "ADADELTA": 4, "ADAM": 5,
    },
    "ParamSpec.DimCheckMode": dict(_DIM_CHECK_MODE),
    "LossParameter.NormalizationMode": {"FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3},
    # 2c
    "ConvolutionParameter.Engine": dict(_ENGINE),
    "DataParameter.DB": {"LEVELDB": 0, "LMDB": 1},
    "EltwiseParameter.EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "HingeLossParameter.Norm": {"L1": 1, "L2": 2},
    "LRNParameter.NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "LRNParameter.Engine": dict(_ENGINE),
    "PoolingParameter.PoolMethod": dict(_POOL_METHOD),
    "PoolingParameter.Engine": dict(_ENGINE),
    "PoolingParameter.RoundMode": {"CEIL": 0, "FLOOR": 1},
    "ReductionParameter.ReductionOp": {"SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4},
    "ReLUParameter.Engine": dict(_ENGINE),
    "SigmoidParameter.Engine": dict(_ENGINE),
    "SoftmaxParameter.Engine": dict(_ENGINE),
    "TanHParameter.Engine": dict(_ENGINE),
    "SPPParameter.PoolMethod": dict(_POOL_METHOD),
    "SPPParameter.Engine": dict(_ENGINE),
    # 2d
    "V1LayerParameter.LayerType": {
        "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3,
        "CONTRASTIVE_LOSS": 37, "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39,
        "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7, "ELTWISE": 25, "EXP": 38,
        "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11,
        "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15,
        "MEMORY_DATA": 29, "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17,
        "POWER": 26, "RELU": 18, "SIGMOID": 19, "SIGMOID_CROSS_ENTROPY_LOSS": 27,
        "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33,
        "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
    },
    "V1LayerParameter.DimCheckMode": dict(_DIM_CHECK_MODE),
    "V0LayerParameter.PoolMethod": dict(_POOL_METHOD),
}

# LayerParameter's *_param sub-messages (2b's table): (field, number, message).
LAYER_PARAMS = [
    ("transform_param", 100, "TransformationParameter"),
    ("loss_param", 101, "LossParameter"),
    ("accuracy_param", 102, "AccuracyParameter"),
    ("argmax_param", 103, "ArgMaxParameter"),
    ("concat_param", 104, "ConcatParameter"),
    ("contrastive_loss_param", 105, "ContrastiveLossParameter"),
    ("convolution_param", 106, "ConvolutionParameter"),
    ("data_param", 107, "DataParameter"),
    ("dropout_param", 108, "DropoutParameter"),
    ("dummy_data_param", 109, "DummyDataParameter"),
    ("eltwise_param", 110, "EltwiseParameter"),
    ("exp_param", 111, "ExpParameter"),
    ("hdf5_data_param", 112, "HDF5DataParameter"),
    ("hdf5_output_param", 113, "HDF5OutputParameter"),
    ("hinge_loss_param", 114, "HingeLossParameter"),
    ("image_data_param", 115, "ImageDataParameter"),
    ("infogain_loss_param", 116, "InfogainLossParameter"),
    ("inner_product_param", 117, "InnerProductParameter"),
    ("lrn_param", 118, "LRNParameter"),
    ("memory_data_param", 119, "MemoryDataParameter"),
    ("mvn_param", 120, "MVNParameter"),
    ("pooling_param", 121, "PoolingParameter"),
    ("power_param", 122, "PowerParameter"),
    ("relu_param", 123, "ReLUParameter"),
    ("sigmoid_param", 124, "SigmoidParameter"),
    ("softmax_param", 125, "SoftmaxParameter"),
    ("slice_param", 126, "SliceParameter"),
    ("tanh_param", 127, "TanHParameter"),
    ("threshold_param", 128, "ThresholdParameter"),
    ("window_data_param", 129, "WindowDataParameter"),
    ("python_param", 130, "PythonParameter"),
    ("prelu_param", 131, "PReLUParameter"),
    ("spp_param", 132, "SPPParameter"),
    ("reshape_param", 133, "ReshapeParameter"),
    ("log_param", 134, "LogParameter"),
    ("flatten_param", 135, "FlattenParameter"),
    ("reduction_param", 136, "ReductionParameter"),
    ("embed_param", 137, "EmbedParameter"),
    ("tile_param", 138, "TileParameter"),
    ("batch_norm_param", 139, "BatchNormParameter"),
    ("elu_param", 140, "ELUParameter"),
    ("bias_param", 141, "BiasParameter"),
    ("scale_param", 142, "ScaleParameter"),
    ("input_param", 143, "InputParameter"),
    ("crop_param", 144, "CropParameter"),
    ("parameter_param", 145, "ParameterParameter"),
    ("recurrent_param", 146, "RecurrentParameter"),
    ("swish_param", 147, "SwishParameter"),
    ("clip_param", 148, "ClipParameter"),
]

MESSAGES: dict[str, list[Field]] = {
    # ------------------------------------------------------------------ 2a
    "BlobShape": [
        rep("dim", 1, "int64", packed=True),
    ],
    "BlobProto": [
        opt("shape", 7, "BlobShape"),
        rep("data", 5, "float", packed=True),
        rep("diff", 6, "float", packed=True),
        rep("double_data", 8, "double", packed=True),
        rep("double_diff", 9, "double", packed=True),
        opt("num", 1, "int32", 0),
        opt("channels", 2, "int32", 0),
        opt("height", 3, "int32", 0),
        opt("width", 4, "int32", 0),
    ],
    "BlobProtoVector": [
        rep("blobs", 1, "BlobProto"),
    ],
    "Datum": [
        opt("channels", 1, "int32"),
        opt("height", 2, "int32"),
        opt("width", 3, "int32"),
        opt("data", 4, "bytes"),
        opt("label", 5, "int32"),
        rep("float_data", 6, "float"),
        opt("encoded", 7, "bool", False),
    ],
    "FillerParameter": [
        opt("type", 1, "string", "constant"),
        opt("value", 2, "float", 0.0),
        opt("min", 3, "float", 0.0),
        opt("max", 4, "float", 1.0),
        opt("mean", 5, "float", 0.0),
        opt("std", 6, "float", 1.0),
        opt("sparse", 7, "int32", -1),
        opt("variance_norm", 8, "FillerParameter.VarianceNorm", "FAN_IN"),
    ],
    "NetParameter": [
        opt("name", 1, "string"),
        rep("input", 3, "string"),
        rep("input_shape", 8, "BlobShape"),
        rep("input_dim", 4, "int32"),
        opt("force_backward", 5, "bool", False),
        opt("state", 6, "NetState"),
        opt("debug_info", 7, "bool", False),
        rep("layer", 100, "LayerParameter"),
        rep("layers", 2, "V1LayerParameter"),
    ],
    "SolverParameter": [
        opt("net", 24, "string"),
        opt("net_param", 25, "NetParameter"),
        opt("train_net", 1, "string"),
        rep("test_net", 2, "string"),
        opt("train_net_param", 21, "NetParameter"),
        rep("test_net_param", 22, "NetParameter"),
        opt("train_state", 26, "NetState"),
        rep("test_state", 27, "NetState"),
        rep("test_iter", 3, "int32"),
        opt("test_interval", 4, "int32", 0),
        opt("test_compute_loss", 19, "bool", False),
        opt("test_initialization", 32, "bool", True),
        opt("base_lr", 5, "float"),
        opt("display", 6, "int32"),
        opt("average_loss", 33, "int32", 1),
        opt("max_iter", 7, "int32"),
        opt("iter_size", 36, "int32", 1),
        opt("lr_policy", 8, "string"),
        opt("gamma", 9, "float"),
        opt("power", 10, "float"),
        opt("momentum", 11, "float"),
        opt("weight_decay", 12, "float"),
        opt("regularization_type", 29, "string", "L2"),
        opt("stepsize", 13, "int32"),
        rep("stepvalue", 34, "int32"),
        opt("clip_gradients", 35, "float", -1.0),
        opt("snapshot", 14, "int32", 0),
        opt("snapshot_prefix", 15, "string"),
        opt("snapshot_diff", 16, "bool", False),
        opt("snapshot_format", 37, "SolverParameter.SnapshotFormat", "BINARYPROTO"),
        opt("solver_mode", 17, "SolverParameter.SolverMode", "GPU"),
        opt("device_id", 18, "int32", 0),
        opt("random_seed", 20, "int64", -1),
        opt("type", 40, "string", "SGD"),
        opt("delta", 31, "float", 1e-8),
        opt("momentum2", 39, "float", 0.999),
        opt("rms_decay", 38, "float", 0.99),
        opt("debug_info", 23, "bool", False),
        opt("snapshot_after_train", 28, "bool", True),
        opt("solver_type", 30, "SolverParameter.SolverType", "SGD"),
        opt("layer_wise_reduce", 41, "bool", True),
        rep("weights", 42, "string"),
    ],
    "SolverState": [
        opt("iter", 1, "int32"),
        opt("learned_net", 2, "string"),
        rep("history", 3, "BlobProto"),
        opt("current_step", 4, "int32", 0),
    ],
    "NetState": [
        opt("phase", 1, "Phase", "TEST"),
        opt("level", 2, "int32", 0),
        rep("stage", 3, "string"),
    ],
    "NetStateRule": [
        opt("phase", 1, "Phase"),
        opt("min_level", 2, "int32"),
        opt("max_level", 3, "int32"),
        rep("stage", 4, "string"),
        rep("not_stage", 5, "string"),
    ],
    "ParamSpec": [
        opt("name", 1, "string"),
        opt("share_mode", 2, "ParamSpec.DimCheckMode"),
        opt("lr_mult", 3, "float", 1.0),
        opt("decay_mult", 4, "float", 1.0),
    ],
    "TransformationParameter": [
        opt("scale", 1, "float", 1.0),
        opt("mirror", 2, "bool", False),
        opt("crop_size", 3, "uint32", 0),
        opt("mean_file", 4, "string"),
        rep("mean_value", 5, "float"),
        opt("force_color", 6, "bool", False),
        opt("force_gray", 7, "bool", False),
    ],
    "LossParameter": [
        opt("ignore_label", 1, "int32"),
        opt("normalization", 3, "LossParameter.NormalizationMode", "VALID"),
        opt("normalize", 2, "bool"),
    ],
    # ------------------------------------------------------------------ 2b
    "LayerParameter": [
        opt("name", 1, "string"),
        opt("type", 2, "string"),
        rep("bottom", 3, "string"),
        rep("top", 4, "string"),
        opt("phase", 10, "Phase"),
        rep("loss_weight", 5, "float"),
        rep("param", 6, "ParamSpec"),
        rep("blobs", 7, "BlobProto"),
        rep("propagate_down", 11, "bool"),
        rep("include", 8, "NetStateRule"),
        rep("exclude", 9, "NetStateRule"),
    ] + [opt(name, number, message) for name, number, message in LAYER_PARAMS],
    # ------------------------------------------------------------------ 2c
    "AccuracyParameter": [
        opt("top_k", 1, "uint32", 1),
        opt("axis", 2, "int32", 1),
        opt("ignore_label", 3, "int32"),
    ],
    "ArgMaxParameter": [
        opt("out_max_val", 1, "bool", False),
        opt("top_k", 2, "uint32", 1),
        opt("axis", 3, "int32"),
    ],
    "ClipParameter": [
        req("min", 1, "float"),
        req("max", 2, "float"),
    ],
    "ConcatParameter": [
        opt("axis", 2, "int32", 1),
        opt("concat_dim", 1, "uint32", 1),
    ],
    "BatchNormParameter": [
        opt("use_global_stats", 1, "bool"),
        opt("moving_average_fraction", 2, "float", 0.999),
        opt("eps", 3, "float", 1e-5),
    ],
    "BiasParameter": [
        opt("axis", 1, "int32", 1),
        opt("num_axes", 2, "int32", 1),
        opt("filler", 3, "FillerParameter"),
    ],
    "ContrastiveLossParameter": [
        opt("margin", 1, "float", 1.0),
        opt("legacy_version", 2, "bool", False),
    ],
    "ConvolutionParameter": [
        opt("num_output", 1, "uint32"),
        opt("bias_term", 2, "bool", True),
        rep("pad", 3, "uint32"),
        rep("kernel_size", 4, "uint32"),
        rep("stride", 6, "uint32"),
        rep("dilation", 18, "uint32"),
        opt("pad_h", 9, "uint32", 0),
        opt("pad_w", 10, "uint32", 0),
        opt("kernel_h", 11, "uint32"),
        opt("kernel_w", 12, "uint32"),
        opt("stride_h", 13, "uint32"),
        opt("stride_w", 14, "uint32"),
        opt("group", 5, "uint32", 1),
        opt("weight_filler", 7, "FillerParameter"),
        opt("bias_filler", 8, "FillerParameter"),
        opt("engine", 15, "ConvolutionParameter.Engine", "DEFAULT"),
        opt("axis", 16, "int32", 1),
        opt("force_nd_im2col", 17, "bool", False),
    ],
    "CropParameter": [
        opt("axis", 1, "int32", 2),
        rep("offset", 2, "uint32"),
    ],
    "DataParameter": [
        opt("source", 1, "string"),
        opt("batch_size", 4, "uint32"),
        opt("rand_skip", 7, "uint32", 0),
        opt("backend", 8, "DataParameter.DB", "LEVELDB"),
        opt("scale", 2, "float", 1.0),
        opt("mean_file", 3, "string"),
        opt("crop_size", 5, "uint32", 0),
        opt("mirror", 6, "bool", False),
        opt("force_encoded_color", 9, "bool", False),
        opt("prefetch", 10, "uint32", 4),
    ],
    "DropoutParameter": [
        opt("dropout_ratio", 1, "float", 0.5),
    ],
    "DummyDataParameter": [
        rep("data_filler", 1, "FillerParameter"),
        rep("shape", 6, "BlobShape"),
        rep("num", 2, "uint32"),
        rep("channels", 3, "uint32"),
        rep("height", 4, "uint32"),
        rep("width", 5, "uint32"),
    ],
    "EltwiseParameter": [
        opt("operation", 1, "EltwiseParameter.EltwiseOp", "SUM"),
        rep("coeff", 2, "float"),
        opt("stable_prod_grad", 3, "bool", True),
    ],
    "ELUParameter": [
        opt("alpha", 1, "float", 1.0),
    ],
    "EmbedParameter": [
        opt("num_output", 1, "uint32"),
        opt("input_dim", 2, "uint32"),
        opt("bias_term", 3, "bool", True),
        opt("weight_filler", 4, "FillerParameter"),
        opt("bias_filler", 5, "FillerParameter"),
    ],
    "ExpParameter": [
        opt("base", 1, "float", -1.0),
        opt("scale", 2, "float", 1.0),
        opt("shift", 3, "float", 0.0),
    ],
    "FlattenParameter": [
        opt("axis", 1, "int32", 1),
        opt("end_axis", 2, "int32", -1),
    ],
    "HDF5DataParameter": [
        opt("source", 1, "string"),
        opt("batch_size", 2, "uint32"),
        opt("shuffle", 3, "bool", False),
    ],
    "HDF5OutputParameter": [
        opt("file_name", 1, "string"),
    ],
    "HingeLossParameter": [
        opt("norm", 1, "HingeLossParameter.Norm", "L1"),
    ],
    "ImageDataParameter": [
        opt("source", 1, "string"),
        opt("batch_size", 4, "uint32", 1),
        opt("rand_skip", 7, "uint32", 0),
        opt("shuffle", 8, "bool", False),
        opt("new_height", 9, "uint32", 0),
        opt("new_width", 10, "uint32", 0),
        opt("is_color", 11, "bool", True),
        opt("scale", 2, "float", 1.0),
        opt("mean_file", 3, "string"),
        opt("crop_size", 5, "uint32", 0),
        opt("mirror", 6, "bool", False),
        opt("root_folder", 12, "string", ""),
    ],
    "InfogainLossParameter": [
        opt("source", 1, "string"),
        opt("axis", 2, "int32", 1),
    ],
    "InnerProductParameter": [
        opt("num_output", 1, "uint32"),
        opt("bias_term", 2, "bool", True),
        opt("weight_filler", 3, "FillerParameter"),
        opt("bias_filler", 4, "FillerParameter"),
        opt("axis", 5, "int32", 1),
        opt("transpose", 6, "bool", False),
    ],
    "InputParameter": [
        rep("shape", 1, "BlobShape"),
    ],
    "LogParameter": [
        opt("base", 1, "float", -1.0),
        opt("scale", 2, "float", 1.0),
        opt("shift", 3, "float", 0.0),
    ],
    "LRNParameter": [
        opt("local_size", 1, "uint32", 5),
        opt("alpha", 2, "float", 1.0),
        opt("beta", 3, "float", 0.75),
        opt("norm_region", 4, "LRNParameter.NormRegion", "ACROSS_CHANNELS"),
        opt("k", 5, "float", 1.0),
        opt("engine", 6, "LRNParameter.Engine", "DEFAULT"),
    ],
    "MemoryDataParameter": [
        opt("batch_size", 1, "uint32"),
        opt("channels", 2, "uint32"),
        opt("height", 3, "uint32"),
        opt("width", 4, "uint32"),
    ],
    "MVNParameter": [
        opt("normalize_variance", 1, "bool", True),
        opt("across_channels", 2, "bool", False),
        opt("eps", 3, "float", 1e-9),
    ],
    "ParameterParameter": [
        opt("shape", 1, "BlobShape"),
    ],
    "PoolingParameter": [
        opt("pool", 1, "PoolingParameter.PoolMethod", "MAX"),
        opt("pad", 4, "uint32", 0),
        opt("pad_h", 9, "uint32", 0),
        opt("pad_w", 10, "uint32", 0),
        opt("kernel_size", 2, "uint32"),
        opt("kernel_h", 5, "uint32"),
        opt("kernel_w", 6, "uint32"),
        opt("stride", 3, "uint32", 1),
        opt("stride_h", 7, "uint32"),
        opt("stride_w", 8, "uint32"),
        opt("engine", 11, "PoolingParameter.Engine", "DEFAULT"),
        opt("global_pooling", 12, "bool", False),
        opt("round_mode", 13, "PoolingParameter.RoundMode", "CEIL"),
    ],
    "PowerParameter": [
        opt("power", 1, "float", 1.0),
        opt("scale", 2, "float", 1.0),
        opt("shift", 3, "float", 0.0),
    ],
    "PythonParameter": [
        opt("module", 1, "string"),
        opt("layer", 2, "string"),
        opt("param_str", 3, "string", ""),
        opt("share_in_parallel", 4, "bool", False),
    ],
    "RecurrentParameter": [
        opt("num_output", 1, "uint32", 0),
        opt("weight_filler", 2, "FillerParameter"),
        opt("bias_filler", 3, "FillerParameter"),
        opt("debug_info", 4, "bool", False),
        opt("expose_hidden", 5, "bool", False),
    ],
    "ReductionParameter": [
        opt("operation", 1, "ReductionParameter.ReductionOp", "SUM"),
        opt("axis", 2, "int32", 0),
        opt("coeff", 3, "float", 1.0),
    ],
    "ReLUParameter": [
        opt("negative_slope", 1, "float", 0.0),
        opt("engine", 2, "ReLUParameter.Engine", "DEFAULT"),
    ],
    "ReshapeParameter": [
        opt("shape", 1, "BlobShape"),
        opt("axis", 2, "int32", 0),
        opt("num_axes", 3, "int32", -1),
    ],
    "ScaleParameter": [
        opt("axis", 1, "int32", 1),
        opt("num_axes", 2, "int32", 1),
        opt("filler", 3, "FillerParameter"),
        opt("bias_term", 4, "bool", False),
        opt("bias_filler", 5, "FillerParameter"),
    ],
    "SigmoidParameter": [
        opt("engine", 1, "SigmoidParameter.Engine", "DEFAULT"),
    ],
    "SliceParameter": [
        opt("axis", 3, "int32", 1),
        rep("slice_point", 2, "uint32"),
        opt("slice_dim", 1, "uint32", 1),
    ],
    "SoftmaxParameter": [
        opt("engine", 1, "SoftmaxParameter.Engine", "DEFAULT"),
        opt("axis", 2, "int32", 1),
    ],
    "SwishParameter": [
        opt("beta", 1, "float", 1.0),
    ],
    "TanHParameter": [
        opt("engine", 1, "TanHParameter.Engine", "DEFAULT"),
    ],
    "TileParameter": [
        opt("axis", 1, "int32", 1),
        opt("tiles", 2, "int32"),
    ],
    "ThresholdParameter": [
        opt("threshold", 1, "float", 0.0),
    ],
    "WindowDataParameter": [
        opt("source", 1, "string"),
        opt("scale", 2, "float", 1.0),
        opt("mean_file", 3, "string"),
        opt("batch_size", 4, "uint32"),
        opt("crop_size", 5, "uint32", 0),
        opt("mirror", 6, "bool", False),
        opt("fg_threshold", 7, "float", 0.5),
        opt("bg_threshold", 8, "float", 0.5),
        opt("fg_fraction", 9, "float", 0.25),
        opt("context_pad", 10, "uint32", 0),
        opt("crop_mode", 11, "string", "warp"),
        opt("cache_images", 12, "bool", False),
        opt("root_folder", 13, "string", ""),
    ],
    "SPPParameter": [
        opt("pyramid_height", 1, "uint32"),
        opt("pool", 2, "SPPParameter.PoolMethod", "MAX"),
        opt("engine", 6, "SPPParameter.Engine", "DEFAULT"),
    ],
    "PReLUParameter": [
        opt("filler", 1, "FillerParameter"),
        opt("channel_shared", 2, "bool", False),
    ],
    # ------------------------------------------------------------------ 2d
    "V1LayerParameter": [
        rep("bottom", 2, "string"),
        rep("top", 3, "string"),
        opt("name", 4, "string"),
        rep("include", 32, "NetStateRule"),
        rep("exclude", 33, "NetStateRule"),
        opt("type", 5, "V1LayerParameter.LayerType"),
        rep("blobs", 6, "BlobProto"),
        rep("param", 1001, "string"),
        rep("blob_share_mode", 1002, "V1LayerParameter.DimCheckMode"),
        rep("blobs_lr", 7, "float"),
        rep("weight_decay", 8, "float"),
        rep("loss_weight", 35, "float"),
        opt("accuracy_param", 27, "AccuracyParameter"),
        opt("argmax_param", 23, "ArgMaxParameter"),
        opt("concat_param", 9, "ConcatParameter"),
        opt("contrastive_loss_param", 40, "ContrastiveLossParameter"),
        opt("convolution_param", 10, "ConvolutionParameter"),
        opt("data_param", 11, "DataParameter"),
        opt("dropout_param", 12, "DropoutParameter"),
        opt("dummy_data_param", 26, "DummyDataParameter"),
        opt("eltwise_param", 24, "EltwiseParameter"),
        opt("exp_param", 41, "ExpParameter"),
        opt("hdf5_data_param", 13, "HDF5DataParameter"),
        opt("hdf5_output_param", 14, "HDF5OutputParameter"),
        opt("hinge_loss_param", 29, "HingeLossParameter"),
        opt("image_data_param", 15, "ImageDataParameter"),
        opt("infogain_loss_param", 16, "InfogainLossParameter"),
        opt("inner_product_param", 17, "InnerProductParameter"),
        opt("lrn_param", 18, "LRNParameter"),
        opt("memory_data_param", 22, "MemoryDataParameter"),
        opt("mvn_param", 34, "MVNParameter"),
        opt("pooling_param", 19, "PoolingParameter"),
        opt("power_param", 21, "PowerParameter"),
        opt("relu_param", 30, "ReLUParameter"),
        opt("sigmoid_param", 38, "SigmoidParameter"),
        opt("softmax_param", 39, "SoftmaxParameter"),
        opt("slice_param", 31, "SliceParameter"),
        opt("tanh_param", 37, "TanHParameter"),
        opt("threshold_param", 25, "ThresholdParameter"),
        opt("window_data_param", 20, "WindowDataParameter"),
        opt("transform_param", 36, "TransformationParameter"),
        opt("loss_param", 42, "LossParameter"),
        opt("layer", 1, "V0LayerParameter"),
    ],
    "V0LayerParameter": [
        opt("name", 1, "string"),
        opt("type", 2, "string"),
        opt("num_output", 3, "uint32"),
        opt("biasterm", 4, "bool", True),
        opt("weight_filler", 5, "FillerParameter"),
        opt("bias_filler", 6, "FillerParameter"),
        opt("pad", 7, "uint32", 0),
        opt("kernelsize", 8, "uint32"),
        opt("group", 9, "uint32", 1),
        opt("stride", 10, "uint32", 1),
        opt("pool", 11, "V0LayerParameter.PoolMethod", "MAX"),
        opt("dropout_ratio", 12, "float", 0.5),
        opt("local_size", 13, "uint32", 5),
        opt("alpha", 14, "float", 1.0),
        opt("beta", 15, "float", 0.75),
        opt("k", 22, "float", 1.0),
        opt("source", 16, "string"),
        opt("scale", 17, "float", 1.0),
        opt("meanfile", 18, "string"),
        opt("batchsize", 19, "uint32"),
        opt("cropsize", 20, "uint32", 0),
        opt("mirror", 21, "bool", False),
        rep("blobs", 50, "BlobProto"),
        rep("blobs_lr", 51, "float"),
        rep("weight_decay", 52, "float"),
        opt("rand_skip", 53, "uint32", 0),
        opt("det_fg_threshold", 54, "float", 0.5),
        opt("det_bg_threshold", 55, "float", 0.5),
        opt("det_fg_fraction", 56, "float", 0.25),
        opt("det_context_pad", 58, "uint32", 0),
        opt("det_crop_mode", 59, "string", "warp"),
        opt("new_num", 60, "int32", 0),
        opt("new_channels", 61, "int32", 0),
        opt("new_height", 62, "int32", 0),
        opt("new_width", 63, "int32", 0),
        opt("shuffle_images", 64, "bool", False),
        opt("concat_dim", 65, "uint32", 1),
        opt("hdf5_output_param", 1001, "HDF5OutputParameter"),
    ],
}
