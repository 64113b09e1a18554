"""Binary .caffemodel files from forks that put their parameters at BVLC's numbers.

The files are built byte by byte (the fork's field number, then the fork's
message), written to disk and read back with ``read_caffemodel``, as a real
R-FCN / SegNet / DeepLab / YOLOv3-port model would be.
"""

from __future__ import annotations

import struct

import pytest

from pipeline.formats import binary, fork_binary
from pipeline.proto import caffe_pb2


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def layer(name: str, type_: str, number: int, payload: bytes, blobs=()) -> bytes:
    lp = caffe_pb2.LayerParameter(name=name, type=type_)
    for b in blobs:
        lp.blobs.add().CopyFrom(b)
    return field(100, lp.SerializeToString() + field(number, payload))


def write(tmp_path, *layers: bytes):
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(b"".join(layers))
    return path


def blob(values):
    b = caffe_pb2.BlobProto()
    b.shape.dim.extend([len(values)])
    b.data.extend(values)
    return b


ROI = caffe_pb2.ROIPoolingParameter(pooled_h=7, pooled_w=6, spatial_scale=0.0625)
SMOOTH = caffe_pb2.SmoothL1LossParameter(sigma=3.0)
SEGNET_UP = caffe_pb2.UpsampleParameter(scale=2, pad_out_h=True, upsample_h=45, upsample_w=60)
YOLO_UP = caffe_pb2.UpsampleParameter(scale=2)
INTERP = caffe_pb2.InterpParameter(zoom_factor=8, pad_beg=-1, pad_end=-2)


@pytest.mark.parametrize("type_, number, msg, target, fork_word", [
    ("ROIPooling", 147, ROI, "roi_pooling_param", "R-FCN"),
    ("SmoothL1Loss", 148, SMOOTH, "smooth_l1_loss_param", "R-FCN"),
    ("Upsample", 137, SEGNET_UP, "upsample_param", "SegNet"),
    ("Upsample", 149, YOLO_UP, "upsample_param", "YOLO"),
    ("Interp", 143, INTERP, "interp_param", "DeepLab"),
])
def test_fork_number_is_read_by_layer_type(tmp_path, type_, number, msg, target, fork_word):
    weights = blob([1.5, -2.0, 0.25])
    path = write(tmp_path, layer("a", type_, number, msg.SerializeToString(), [weights]))
    raw = caffe_pb2.NetParameter.FromString(path.read_bytes())  # what protobuf alone makes of it
    assert not raw.layer[0].HasField(target)
    net = binary.read_caffemodel(path)
    lp = net.layer[0]
    assert lp.HasField(target) and getattr(lp, target) == msg
    assert [f.name for f, _ in lp.ListFields() if f.name.endswith("_param")] == [target]
    assert list(lp.blobs[0].data) == [1.5, -2.0, 0.25]  # the weights are untouched


def test_notes_say_what_moved():
    net = caffe_pb2.NetParameter.FromString(layer("roi", "ROIPooling", 147, ROI.SerializeToString()))
    notes = fork_binary.resolve_fork_fields(net, "x.caffemodel")
    assert len(notes) == 1
    assert "layer 'roi' (ROIPooling): field 147 read as roi_pooling_param" in notes[0]
    assert "'swish_param'" in notes[0] and "R-FCN" in notes[0]
    assert fork_binary.resolve_fork_fields(net, "x.caffemodel") == []  # already resolved


def test_real_bvlc_fields_on_other_layers_stay(tmp_path):
    swish = caffe_pb2.SwishParameter(beta=2.0)
    embed = caffe_pb2.EmbedParameter(num_output=5, input_dim=9)
    path = write(tmp_path, layer("s", "Swish", 147, swish.SerializeToString()),
                 layer("e", "Embed", 137, embed.SerializeToString()),
                 layer("r", "ROIPooling", 147, ROI.SerializeToString()))
    net = binary.read_caffemodel(path)
    assert net.layer[0].swish_param == swish and net.layer[1].embed_param == embed
    assert net.layer[2].roi_pooling_param == ROI and not net.layer[2].HasField("swish_param")


def test_py_faster_rcnn_numbers_need_no_resolution(tmp_path):
    path = write(tmp_path, layer("r", "ROIPooling", 8266711, ROI.SerializeToString()))
    assert binary.read_caffemodel(path).layer[0].roi_pooling_param == ROI


def test_rewritten_file_uses_our_numbers(tmp_path):
    path = write(tmp_path, layer("r", "ROIPooling", 147, ROI.SerializeToString()))
    out = tmp_path / "ours.caffemodel"
    binary.write_binary(binary.read_caffemodel(path), out)
    data = out.read_bytes()
    assert varint(8266711 << 3 | 2) in data and varint(147 << 3 | 2) not in data
    assert caffe_pb2.NetParameter.FromString(data).layer[0].roi_pooling_param == ROI


def test_upgrade_net_proto_binary_resolves_too(tmp_path):
    from pipeline.commands.upgrade import upgrade_net_proto_binary

    src = write(tmp_path, layer("i", "Interp", 143, INTERP.SerializeToString()))
    dst = tmp_path / "out.caffemodel"
    assert upgrade_net_proto_binary([str(src), str(dst)]) == 0
    assert caffe_pb2.NetParameter.FromString(dst.read_bytes()).layer[0].interp_param == INTERP


def test_smooth_l1_at_clip_number_is_not_required_clip(tmp_path):
    """clip_param's min/max are required in BVLC; a SmoothL1 sigma there must still load."""
    path = write(tmp_path, layer("l", "SmoothL1Loss", 148, struct.pack("<Bf", 0x0D, 1.0)))
    lp = binary.read_caffemodel(path).layer[0]
    assert lp.smooth_l1_loss_param.sigma == 1.0 and not lp.HasField("clip_param")

