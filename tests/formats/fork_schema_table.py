"""The allow-list of fork additions to our schema, as literal Python data.

Everything here is an addition to BVLC's schema (tests/formats/bvlc_schema_table.py)
that ``protos/caffe.proto`` makes so the fork layers the pipeline runs can be read:
fields added to BVLC's messages (``ADDITIONS``: message, field row, fork) and whole
messages the forks define (``MESSAGES`` / ``ENUMS``, each message's fork in
``MESSAGE_FORK``). tests/formats/test_schema.py checks our schema equals BVLC's
table plus exactly these rows - every number, type, label and default - and that no
added number collides with a BVLC number of the same message.

Sources (read with the project's search tools, numbers as the forks use them unless
noted): SSD = weiliu89/caffe branch ssd (LayerParameter 200-207,
TransformationParameter 8-14, its messages); py-faster-rcnn =
rbgirshick/caffe-fast-rcnn (roi_pooling_param 8266711, smooth_l1_loss_param
8266712; R-FCN's daijifeng001/caffe-rfcn puts them at BVLC's 147/148 instead, see
pipeline/formats/fork_binary.py); R-FCN (psroi_pooling_param 149); ShuffleNet =
farmingyard/ShuffleNet (shuffle_channel_param 164); SegNet = alexgkendall/caffe-segnet
(UpsampleParameter; its upsample_param = 137 is BVLC's embed_param, so ours is 2137);
DeepLab v2 (InterpParameter; its interp_param = 143 is BVLC's input_param, so ours
is 2143); DenseNet ports = BVLC PR #3057 (ceil_mode = 13 is BVLC's round_mode, so
ours is 1013). Where a fork declares a field ``required`` (R-FCN's
PSROIPoolingParameter) ours is optional: same bytes, and the layer reports a
missing value by name.
"""

from __future__ import annotations

from formats.bvlc_schema_table import NO_DEFAULT, opt, rep  # noqa: F401

from pipeline.formats import forks

SSD, FRCNN, RFCN = forks.SSD, forks.FASTER_RCNN, forks.RFCN

# (message, field, fork): fields added to BVLC messages.
ADDITIONS = [
    ("LayerParameter", opt("annotated_data_param", 200, "AnnotatedDataParameter"), SSD),
    ("LayerParameter", opt("multibox_loss_param", 201, "MultiBoxLossParameter"), SSD),
    ("LayerParameter", opt("permute_param", 202, "PermuteParameter"), SSD),
    ("LayerParameter", opt("prior_box_param", 203, "PriorBoxParameter"), SSD),
    ("LayerParameter", opt("detection_output_param", 204, "DetectionOutputParameter"), SSD),
    ("LayerParameter", opt("detection_evaluate_param", 205, "DetectionEvaluateParameter"), SSD),
    ("LayerParameter", opt("norm_param", 206, "NormalizeParameter"), SSD),
    ("LayerParameter", opt("video_data_param", 207, "VideoDataParameter"), SSD),
    ("LayerParameter", opt("psroi_pooling_param", 149, "PSROIPoolingParameter"), RFCN),
    ("LayerParameter", opt("shuffle_channel_param", 164, "ShuffleChannelParameter"), forks.SHUFFLENET),
    ("LayerParameter", opt("roi_pooling_param", 8266711, "ROIPoolingParameter"), FRCNN),
    ("LayerParameter", opt("smooth_l1_loss_param", 8266712, "SmoothL1LossParameter"), FRCNN),
    ("LayerParameter", opt("upsample_param", 2137, "UpsampleParameter"), forks.SEGNET),
    ("LayerParameter", opt("interp_param", 2143, "InterpParameter"), forks.DEEPLAB),
    ("TransformationParameter", opt("resize_param", 8, "ResizeParameter"), SSD),
    ("TransformationParameter", opt("noise_param", 9, "NoiseParameter"), SSD),
    ("TransformationParameter", opt("emit_constraint", 10, "EmitConstraint"), SSD),
    ("TransformationParameter", opt("crop_h", 11, "uint32", 0), SSD),
    ("TransformationParameter", opt("crop_w", 12, "uint32", 0), SSD),
    ("TransformationParameter", opt("distort_param", 13, "DistortionParameter"), SSD),
    ("TransformationParameter", opt("expand_param", 14, "ExpansionParameter"), SSD),
    ("PoolingParameter", opt("ceil_mode", 1013, "bool", True), forks.DENSENET),
]

ENUMS: dict[str, dict[str, int]] = {
    "AnnotatedDatum.AnnotationType": {"BBOX": 0},
    "EmitConstraint.EmitType": {"CENTER": 0, "MIN_OVERLAP": 1},
    "ResizeParameter.Resize_mode": {"WARP": 1, "FIT_SMALL_SIZE": 2, "FIT_LARGE_SIZE_AND_PAD": 3},
    "ResizeParameter.Pad_mode": {"CONSTANT": 1, "MIRRORED": 2, "REPEAT_NEAREST": 3},
    "ResizeParameter.Interp_mode": {"LINEAR": 1, "AREA": 2, "NEAREST": 3, "CUBIC": 4, "LANCZOS4": 5},
    "VideoDataParameter.VideoType": {"WEBCAM": 0, "VIDEO": 1},
    "PriorBoxParameter.CodeType": {"CORNER": 1, "CENTER_SIZE": 2, "CORNER_SIZE": 3},
    "MultiBoxLossParameter.LocLossType": {"L2": 0, "SMOOTH_L1": 1},
    "MultiBoxLossParameter.ConfLossType": {"SOFTMAX": 0, "LOGISTIC": 1},
    "MultiBoxLossParameter.MatchType": {"BIPARTITE": 0, "PER_PREDICTION": 1},
    "MultiBoxLossParameter.MiningType": {"NONE": 0, "MAX_NEGATIVE": 1, "HARD_EXAMPLE": 2},
}

_F = "float"
MESSAGES: dict[str, list] = {
    "LabelMapItem": [opt("name", 1, "string"), opt("label", 2, "int32"), opt("display_name", 3, "string")],
    "LabelMap": [rep("item", 1, "LabelMapItem")],
    "NormalizedBBox": [opt("xmin", 1, _F), opt("ymin", 2, _F), opt("xmax", 3, _F), opt("ymax", 4, _F),
                       opt("label", 5, "int32"), opt("difficult", 6, "bool"), opt("score", 7, _F),
                       opt("size", 8, _F)],
    "Annotation": [opt("instance_id", 1, "int32", 0), opt("bbox", 2, "NormalizedBBox")],
    "AnnotationGroup": [opt("group_label", 1, "int32"), rep("annotation", 2, "Annotation")],
    "AnnotatedDatum": [opt("datum", 1, "Datum"), opt("type", 2, "AnnotatedDatum.AnnotationType"),
                       rep("annotation_group", 3, "AnnotationGroup")],
    "Sampler": [opt("min_scale", 1, _F, 1.0), opt("max_scale", 2, _F, 1.0), opt("min_aspect_ratio", 3, _F, 1.0),
                opt("max_aspect_ratio", 4, _F, 1.0)],
    "SampleConstraint": [opt(f"{a}_{b}", n, _F) for n, (a, b) in enumerate(
        [("min", "jaccard_overlap"), ("max", "jaccard_overlap"), ("min", "sample_coverage"),
         ("max", "sample_coverage"), ("min", "object_coverage"), ("max", "object_coverage")], start=1)],
    "BatchSampler": [opt("use_original_image", 1, "bool", True), opt("sampler", 2, "Sampler"),
                     opt("sample_constraint", 3, "SampleConstraint"), opt("max_sample", 4, "uint32"),
                     opt("max_trials", 5, "uint32", 100)],
    "EmitConstraint": [opt("emit_type", 1, "EmitConstraint.EmitType", "CENTER"), opt("emit_overlap", 2, _F)],
    "ResizeParameter": [opt("prob", 1, _F, 1.0), opt("resize_mode", 2, "ResizeParameter.Resize_mode", "WARP"),
                        opt("height", 3, "uint32", 0), opt("width", 4, "uint32", 0),
                        opt("height_scale", 8, "uint32", 0), opt("width_scale", 9, "uint32", 0),
                        opt("pad_mode", 5, "ResizeParameter.Pad_mode", "CONSTANT"), rep("pad_value", 6, _F),
                        rep("interp_mode", 7, "ResizeParameter.Interp_mode")],
    "SaltPepperParameter": [opt("fraction", 1, _F, 0.0), rep("value", 2, _F)],
    "NoiseParameter": [opt("prob", 1, _F, 0.0), opt("hist_eq", 2, "bool", False), opt("inverse", 3, "bool", False),
                       opt("decolorize", 4, "bool", False), opt("gauss_blur", 5, "bool", False),
                       opt("jpeg", 6, _F, -1.0), opt("posterize", 7, "bool", False), opt("erode", 8, "bool", False),
                       opt("saltpepper", 9, "bool", False), opt("saltpepper_param", 10, "SaltPepperParameter"),
                       opt("clahe", 11, "bool", False), opt("convert_to_hsv", 12, "bool", False),
                       opt("convert_to_lab", 13, "bool", False)],
    "DistortionParameter": [opt(name, n, _F, 0.0) for n, name in enumerate(
        ["brightness_prob", "brightness_delta", "contrast_prob", "contrast_lower", "contrast_upper", "hue_prob",
         "hue_delta", "saturation_prob", "saturation_lower", "saturation_upper", "random_order_prob"], start=1)],
    "ExpansionParameter": [opt("prob", 1, _F, 1.0), opt("max_expand_ratio", 2, _F, 1.0)],
    "AnnotatedDataParameter": [rep("batch_sampler", 1, "BatchSampler"), opt("label_map_file", 2, "string"),
                               opt("anno_type", 3, "AnnotatedDatum.AnnotationType")],
    "VideoDataParameter": [opt("video_type", 1, "VideoDataParameter.VideoType", "WEBCAM"),
                           opt("device_id", 2, "int32", 0), opt("video_file", 3, "string"),
                           opt("skip_frames", 4, "uint32", 0)],
    "NormalizeParameter": [opt("across_spatial", 1, "bool", True), opt("scale_filler", 2, "FillerParameter"),
                           opt("channel_shared", 3, "bool", True), opt("eps", 4, _F, 1e-10)],
    "PermuteParameter": [rep("order", 1, "uint32")],
    "PriorBoxParameter": [rep("min_size", 1, _F), rep("max_size", 2, _F), rep("aspect_ratio", 3, _F),
                          opt("flip", 4, "bool", True), opt("clip", 5, "bool", False), rep("variance", 6, _F),
                          opt("img_size", 7, "uint32"), opt("img_h", 8, "uint32"), opt("img_w", 9, "uint32"),
                          opt("step", 10, _F), opt("step_h", 11, _F), opt("step_w", 12, _F),
                          opt("offset", 13, _F, 0.5)],
    "NonMaximumSuppressionParameter": [opt("nms_threshold", 1, _F, 0.3), opt("top_k", 2, "int32"),
                                       opt("eta", 3, _F, 1.0)],
    "SaveOutputParameter": [opt("output_directory", 1, "string"), opt("output_name_prefix", 2, "string"),
                            opt("output_format", 3, "string"), opt("label_map_file", 4, "string"),
                            opt("name_size_file", 5, "string"), opt("num_test_image", 6, "uint32"),
                            opt("resize_param", 7, "ResizeParameter")],
    "DetectionOutputParameter": [
        opt("num_classes", 1, "uint32"), opt("share_location", 2, "bool", True),
        opt("background_label_id", 3, "int32", 0), opt("nms_param", 4, "NonMaximumSuppressionParameter"),
        opt("save_output_param", 5, "SaveOutputParameter"),
        opt("code_type", 6, "PriorBoxParameter.CodeType", "CORNER"),
        opt("variance_encoded_in_target", 8, "bool", False), opt("keep_top_k", 7, "int32", -1),
        opt("confidence_threshold", 9, _F), opt("visualize", 10, "bool", False),
        opt("visualize_threshold", 11, _F), opt("save_file", 12, "string")],
    "DetectionEvaluateParameter": [opt("num_classes", 1, "uint32"), opt("background_label_id", 2, "uint32", 0),
                                   opt("overlap_threshold", 3, _F, 0.5), opt("evaluate_difficult_gt", 4, "bool", True),
                                   opt("name_size_file", 5, "string"), opt("resize_param", 6, "ResizeParameter")],
    "MultiBoxLossParameter": [
        opt("loc_loss_type", 1, "MultiBoxLossParameter.LocLossType", "SMOOTH_L1"),
        opt("conf_loss_type", 2, "MultiBoxLossParameter.ConfLossType", "SOFTMAX"),
        opt("loc_weight", 3, _F, 1.0), opt("num_classes", 4, "uint32"), opt("share_location", 5, "bool", True),
        opt("match_type", 6, "MultiBoxLossParameter.MatchType", "PER_PREDICTION"),
        opt("overlap_threshold", 7, _F, 0.5), opt("use_prior_for_matching", 8, "bool", True),
        opt("background_label_id", 9, "uint32", 0), opt("use_difficult_gt", 10, "bool", True),
        opt("do_neg_mining", 11, "bool"), opt("neg_pos_ratio", 12, _F, 3.0), opt("neg_overlap", 13, _F, 0.5),
        opt("code_type", 14, "PriorBoxParameter.CodeType", "CORNER"),
        opt("encode_variance_in_target", 16, "bool", False), opt("map_object_to_agnostic", 17, "bool", False),
        opt("ignore_cross_boundary_bbox", 18, "bool", False), opt("bp_inside", 19, "bool", False),
        opt("mining_type", 20, "MultiBoxLossParameter.MiningType", "MAX_NEGATIVE"),
        opt("nms_param", 21, "NonMaximumSuppressionParameter"), opt("sample_size", 22, "int32", 64),
        opt("use_prior_for_nms", 23, "bool", False)],
    "ROIPoolingParameter": [opt("pooled_h", 1, "uint32", 0), opt("pooled_w", 2, "uint32", 0),
                            opt("spatial_scale", 3, _F, 1.0)],
    "SmoothL1LossParameter": [opt("sigma", 1, _F, 1.0)],
    "PSROIPoolingParameter": [opt("spatial_scale", 1, _F), opt("output_dim", 2, "int32"),
                              opt("group_size", 3, "int32")],
    "UpsampleParameter": [opt("scale", 1, "uint32", 2), opt("scale_h", 2, "uint32"), opt("scale_w", 3, "uint32"),
                          opt("pad_out_h", 4, "bool", False), opt("pad_out_w", 5, "bool", False),
                          opt("upsample_h", 6, "uint32"), opt("upsample_w", 7, "uint32")],
    "InterpParameter": [opt("height", 1, "int32", 0), opt("width", 2, "int32", 0), opt("zoom_factor", 3, "int32", 1),
                        opt("shrink_factor", 4, "int32", 1), opt("pad_beg", 5, "int32", 0),
                        opt("pad_end", 6, "int32", 0)],
    "ShuffleChannelParameter": [opt("group", 1, "uint32", 1)],
}

_SSD_MESSAGES = [m for m in MESSAGES if m not in (
    "ROIPoolingParameter", "SmoothL1LossParameter", "PSROIPoolingParameter", "UpsampleParameter",
    "InterpParameter", "ShuffleChannelParameter")]
MESSAGE_FORK = {m: SSD for m in _SSD_MESSAGES} | {
    "ROIPoolingParameter": FRCNN, "SmoothL1LossParameter": FRCNN, "PSROIPoolingParameter": RFCN,
    "UpsampleParameter": forks.SEGNET, "InterpParameter": forks.DEEPLAB,
    "ShuffleChannelParameter": forks.SHUFFLENET,
}
