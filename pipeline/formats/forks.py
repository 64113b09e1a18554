"""Fields and layer types that well-known Caffe forks add to BVLC's schema.

Used only to turn "no field named X" / "unknown layer type X" into a message that
says which fork a prototxt was written for.
"""

from __future__ import annotations

SSD = "SSD (weiliu89/caffe, branch ssd)"
FASTER_RCNN = "py-faster-rcnn (rbgirshick/caffe-fast-rcnn)"
RFCN = "R-FCN (daijifeng001/caffe-rfcn)"
DEEPLAB = "DeepLab (deeplab-public)"
SEGNET = "SegNet (alexgkendall/caffe-segnet)"
YOLO = "a YOLO Caffe port"
SHUFFLENET = "ShuffleNet ports (farmingyard/ShuffleNet)"
SENET = "SENet (hujie-frank/SENet)"
MOBILENET = "MobileNet ports (e.g. chuanqi305/MobileNet-SSD)"
NVCAFFE = "NVIDIA Caffe (NVCaffe)"
CAFFE_WINDOWS = "Microsoft Caffe / caffe-windows"

# LayerParameter fields (``xxx_param``) -> fork that defines them.
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
    "ceil_mode": "DenseNet / PyTorch-converted Caffe ports (pooling_param.ceil_mode)",
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


def fork_hint_for_field(name: str) -> str:
    """' (field of <fork>, not BVLC Caffe)' or '' when the name is not a known fork field."""
    fork = FORK_FIELDS.get(name)
    return f"; '{name}' comes from {fork}, not BVLC Caffe" if fork else ""


def fork_hint_for_type(name: str) -> str:
    fork = FORK_LAYER_TYPES.get(name)
    return f"; layer type '{name}' comes from {fork}, not BVLC Caffe" if fork else ""
