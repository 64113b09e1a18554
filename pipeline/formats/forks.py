"""Fields and layer types that well-known Caffe forks add to BVLC's schema.

Two uses:

- **Attribution.** ``FORK_LAYER_TYPES`` says which fork a layer type comes from;
  ``pipeline summary`` marks such layers ``fork: <name>`` whether or not the
  pipeline runs them (the fork layer classes carry the same name in ``fork``).
- **Clear errors for what is not supported.** A prototxt field or layer type of a
  fork the pipeline does not implement gets "comes from <fork>, not BVLC Caffe"
  appended to the parse error / unknown-type error. Fields that our schema now
  holds (SSD's ``prior_box_param``, py-faster-rcnn's ``roi_pooling_param``, ...)
  never fail to parse, and the layer types the pipeline runs are registered, so
  neither reaches these hints; ``fork_hint_for_field`` still returns "" for a
  supported field in case a message quotes its name for another reason.

``SUPPORTED_FORK_TYPES`` lists the fork layer types the pipeline runs
(``pipeline/layers/fork_*.py``); a test checks it against the registry.
"""

from __future__ import annotations

from ..proto import caffe_pb2

SSD = "SSD (weiliu89/caffe, branch ssd)"
FASTER_RCNN = "py-faster-rcnn (rbgirshick/caffe-fast-rcnn)"
RFCN = "R-FCN (daijifeng001/caffe-rfcn)"
DEEPLAB = "DeepLab (deeplab-public)"
SEGNET = "SegNet (alexgkendall/caffe-segnet)"
YOLO = "a YOLO Caffe port"
SHUFFLENET = "ShuffleNet ports (farmingyard/ShuffleNet)"
SENET = "SENet (hujie-frank/SENet)"
MOBILENET = "MobileNet ports (e.g. chuanqi305/MobileNet-SSD)"
DENSENET = "DenseNet / PyTorch-converted Caffe ports (BVLC PR #3057)"
NVCAFFE = "NVIDIA Caffe (NVCaffe)"
CAFFE_WINDOWS = "Microsoft Caffe / caffe-windows"

# LayerParameter fields (``xxx_param``) and PoolingParameter.ceil_mode -> fork that defines them.
FORK_FIELDS = {
    "annotated_data_param": SSD,
    "multibox_loss_param": SSD,
    "permute_param": SSD,
    "prior_box_param": SSD,
    "detection_output_param": SSD,
    "detection_evaluate_param": SSD,
    "norm_param": SSD,
    "video_data_param": SSD,
    "roi_pooling_param": FASTER_RCNN,
    "smooth_l1_loss_param": FASTER_RCNN,
    "psroi_pooling_param": RFCN,
    "box_annotator_ohem_param": RFCN,
    "interp_param": DEEPLAB,
    "seg_accuracy_param": DEEPLAB,
    "mat_read_param": DEEPLAB,
    "bn_param": SEGNET,
    "upsample_param": SEGNET,
    "dense_image_data_param": SEGNET,
    "region_param": YOLO,
    "reorg_param": YOLO,
    "yolo_param": YOLO,
    "shuffle_channel_param": SHUFFLENET,
    "proposal_param": FASTER_RCNN,
    "ceil_mode": DENSENET,  # PoolingParameter.ceil_mode
}

# Layer type strings -> fork that registers them.
FORK_LAYER_TYPES = {
    "AnnotatedData": SSD,
    "MultiBoxLoss": SSD,
    "Permute": SSD,
    "PriorBox": SSD,
    "DetectionOutput": SSD,
    "DetectionEvaluate": SSD,
    "Normalize": SSD,
    "VideoData": SSD,
    "ROIPooling": FASTER_RCNN,
    "SmoothL1Loss": FASTER_RCNN,
    "Proposal": FASTER_RCNN,
    "PSROIPooling": RFCN,
    "BoxAnnotatorOHEM": RFCN,
    "Interp": DEEPLAB,
    "SegAccuracy": DEEPLAB,
    "BN": SEGNET,
    "Upsample": SEGNET,
    "DenseImageData": SEGNET,
    "Region": YOLO,
    "Reorg": YOLO,
    "ShuffleChannel": SHUFFLENET,
    "Axpy": SENET,
    "ReLU6": MOBILENET,
    "DepthwiseConvolution": MOBILENET,
    "ConvolutionDepthwise": MOBILENET,
}

# The fork layer types the pipeline runs (pipeline/layers/fork_*.py).
SUPPORTED_FORK_TYPES = frozenset({
    "Normalize", "PriorBox", "Permute", "DetectionOutput", "MultiBoxLoss",
    "ROIPooling", "PSROIPooling", "SmoothL1Loss",
    "Upsample", "Interp", "ShuffleChannel", "ReLU6", "Axpy",
})

_SCHEMA_FIELDS = frozenset(
    {f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields}
    | {f.name for f in caffe_pb2.PoolingParameter.DESCRIPTOR.fields}
)


def fork_of_type(name: str) -> str | None:
    """The fork a layer type comes from, or None for BVLC types and unknown names."""
    return FORK_LAYER_TYPES.get(name)


def is_supported_field(name: str) -> bool:
    """True when our schema holds the fork field ``name`` (so prototxts using it parse)."""
    return name in FORK_FIELDS and name in _SCHEMA_FIELDS


def fork_hint_for_field(name: str) -> str:
    """'; 'x' comes from <fork>, not BVLC Caffe' for an unsupported fork field, else ''."""
    fork = FORK_FIELDS.get(name)
    if not fork or is_supported_field(name):
        return ""
    return f"; '{name}' comes from {fork}, not BVLC Caffe, and the pipeline does not support it"


def fork_hint_for_type(name: str) -> str:
    """The same for a layer type the registry does not know."""
    fork = FORK_LAYER_TYPES.get(name)
    if not fork or name in SUPPORTED_FORK_TYPES:
        return ""
    return f"; layer type '{name}' comes from {fork}, not BVLC Caffe, and the pipeline does not support it"
