"""Binary files from forks that reused BVLC's field numbers: re-read by layer type.

A text prototxt names its fields, so ``roi_pooling_param { ... }`` parses whatever
number a fork gave it. A binary ``.caffemodel`` carries only numbers, and some forks
put their parameters at numbers BVLC (or another fork) uses for something else:

======================  ==========================  =====================================
layer type              fork number (fork)          what our schema has at that number
======================  ==========================  =====================================
ROIPooling              147 (R-FCN caffe-rfcn)      BVLC's ``swish_param``
SmoothL1Loss            148 (R-FCN caffe-rfcn)      BVLC's ``clip_param``
Upsample                137 (SegNet)                BVLC's ``embed_param``
Upsample                149 (YOLOv3 Caffe ports)    R-FCN's ``psroi_pooling_param``
Interp                  143 (DeepLab v2)            BVLC's ``input_param``
======================  ==========================  =====================================

Protobuf parses those bytes as our field of that number (or keeps them as unknown
fields when the wire types disagree). :func:`resolve_fork_fields` runs on every
binary ``NetParameter`` read (``binary.read_caffemodel``): for a layer of one of the
types above it takes the bytes stored under the fork's number (known or unknown
field alike) and re-reads them as the fork's message, moved to our number
(``roi_pooling_param`` = 8266711 as in py-faster-rcnn, ``smooth_l1_loss_param`` =
8266712, ``upsample_param`` = 2137, ``interp_param`` = 2143). A layer of any other
type is left alone, so a real ``swish_param`` on a Swish layer stays one. A file the
pipeline writes back uses our numbers.

Not resolvable: DenseNet ports' ``PoolingParameter.ceil_mode`` at 13, BVLC's
``round_mode`` (same layer type, same wire type); binary field 13 of a pooling layer
is always read as BVLC's ``round_mode``. Only the layer structure is affected: weights
load by layer name, and nets are built from the text prototxt, where ``ceil_mode``
parses by name (ours is at 1013).
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from ..errors import ParseError
from ..proto import caffe_pb2
from . import forks

# layer type -> ((fork's field number, our field name, fork), ...)
FORK_NUMBERS: dict[str, tuple[tuple[int, str, str], ...]] = {
    "ROIPooling": ((147, "roi_pooling_param", forks.RFCN),),
    "SmoothL1Loss": ((148, "smooth_l1_loss_param", forks.RFCN),),
    "Upsample": ((137, "upsample_param", forks.SEGNET), (149, "upsample_param", forks.YOLO)),
    "Interp": ((143, "interp_param", forks.DEEPLAB),),
}

_LENGTH_DELIMITED = 2


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """Top-level fields of a serialized message: (number, wire type, raw bytes, payload)."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        payload = None
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(buf, pos)
            payload = buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if pos > len(buf):
            raise ValueError("field runs past the end")
        yield number, wire, buf[start:pos], payload


def _resolve_layer(lp: caffe_pb2.LayerParameter, where: str) -> list[str]:
    moves = {num: (field, fork) for num, field, fork in FORK_NUMBERS.get(lp.type, ())}
    if not moves:
        return []
    data = lp.SerializePartialToString()
    keep, moved, seen = [], {}, []
    try:
        for number, wire, raw, payload in _fields(data):
            if number in moves and wire == _LENGTH_DELIMITED:
                moved.setdefault(moves[number][0], []).append(payload)
                seen.append(number)
            else:
                keep.append(raw)
    except ValueError as e:  # our own serialisation: cannot happen for a parsed message
        raise ParseError(where, f"layer '{lp.name}': {e}") from None
    if not moved:
        return []
    fixed = caffe_pb2.LayerParameter()
    fixed.ParseFromString(b"".join(keep))
    for field, payloads in moved.items():
        try:
            getattr(fixed, field).MergeFromString(b"".join(payloads))
        except DecodeError as e:
            raise ParseError(where, f"layer '{lp.name}' ({lp.type}): the bytes at field "
                                    f"{seen} are not a valid {field}: {e}") from None
    lp.CopyFrom(fixed)
    notes = []
    by_number = {f.number: f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields}
    for number in dict.fromkeys(seen):
        field, fork = moves[number]
        ours = by_number.get(number)
        instead = f"our field {number} is '{ours}'" if ours else f"field {number} is unknown to BVLC"
        notes.append(f"{where}: layer '{lp.name}' ({lp.type}): field {number} read as {field} "
                     f"({fork}); {instead}")
    return notes


def resolve_fork_fields(net: caffe_pb2.NetParameter, source: str = "<net>") -> list[str]:
    """Re-read fork parameters stored at colliding numbers (see the module docstring).

    Changes ``net`` in place; returns one note per moved field (empty when nothing
    moved). Raises ParseError naming the layer when the bytes are not a valid
    message of the fork's type.
    """
    notes: list[str] = []
    for lp in net.layer:
        notes += _resolve_layer(lp, source)
    return notes
