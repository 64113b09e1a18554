"""Binary protobuf files: .caffemodel, .binaryproto, .solverstate, Datum records.

Caffe raises protobuf's read limit to 2 GB; so do we (the Python runtime has no
smaller limit, and a test reads a > 100 MB model). A file that does not parse is
walked field by field (``locate_wire_error``) so the error says where it breaks:
the field path, the byte offset and what was expected - e.g. a truncated file.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from ..errors import ParseError
from ..proto import caffe_pb2
from . import fork_binary
from .atomic import atomic_write_bytes

MAX_BYTES = 2**31 - 1  # Caffe's kProtoReadBytesLimit

_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "32-bit"}
_EXPECTED_WIRE = {
    FieldDescriptor.TYPE_DOUBLE: 1,
    FieldDescriptor.TYPE_FLOAT: 5,
    FieldDescriptor.TYPE_INT64: 0,
    FieldDescriptor.TYPE_UINT64: 0,
    FieldDescriptor.TYPE_INT32: 0,
    FieldDescriptor.TYPE_UINT32: 0,
    FieldDescriptor.TYPE_BOOL: 0,
    FieldDescriptor.TYPE_ENUM: 0,
    FieldDescriptor.TYPE_STRING: 2,
    FieldDescriptor.TYPE_BYTES: 2,
    FieldDescriptor.TYPE_MESSAGE: 2,
}


def is_repeated(field) -> bool:
    """Whether a field descriptor is repeated (protobuf 4.x has ``label``, 6+ ``is_repeated``)."""
    rep = getattr(field, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return field.label == FieldDescriptor.LABEL_REPEATED


def _varint(buf: bytes, pos: int, end: int):
    result = shift = 0
    while True:
        if pos >= end:
            return None, pos
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            return None, pos


def locate_wire_error(buf: bytes, descriptor, start: int = 0, end: int | None = None, path: str = ""):
    """Walk ``buf`` as the message ``descriptor``; return a description of the first
    problem (field path, byte offset, what was expected) or None if the wire is sound.
    """
    end = len(buf) if end is None else end
    pos = start
    counts: dict[int, int] = {}
    while pos < end:
        at = pos
        tag, pos = _varint(buf, pos, end)
        if tag is None:
            return f"{path or 'message'}: truncated field tag at byte {at}"
        number, wire = tag >> 3, tag & 7
        if number == 0 or wire in (6, 7):
            return f"{path or 'message'}: invalid field tag {tag} at byte {at}"
        field = descriptor.fields_by_number.get(number) if descriptor is not None else None
        name = field.name if field is not None else f"#{number}"
        idx = counts.get(number, 0)
        counts[number] = idx + 1
        here = f"{path}.{name}" if path else name
        if field is not None and is_repeated(field):
            here += f"[{idx}]"
        if field is not None:
            want = _EXPECTED_WIRE.get(field.type)
            packed_ok = wire == 2 and is_repeated(field) and want in (0, 1, 5)
            if want is not None and wire != want and not packed_ok:
                return (
                    f"{here} at byte {at}: wire type {_WIRE_NAMES.get(wire, wire)}, "
                    f"expected {_WIRE_NAMES[want]} for a {field.name} field"
                )
        if wire == 0:
            v, pos = _varint(buf, pos, end)
            if v is None:
                return f"{here} at byte {at}: value runs past the end of the data (truncated?)"
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                return f"{here} at byte {at}: needs {size} bytes, {end - pos} remain (truncated?)"
            pos += size
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length is None:
                return f"{here} at byte {at}: length runs past the end of the data (truncated?)"
            if pos + length > end:
                return (
                    f"{here} at byte {at}: declares {length:,} bytes but only {end - pos:,} remain "
                    "(file truncated?)"
                )
            if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                inner = locate_wire_error(buf, field.message_type, pos, pos + length, here)
                if inner:
                    return inner
            pos += length
        else:  # groups: not used by caffe.proto
            return f"{here} at byte {at}: unexpected {_WIRE_NAMES[wire]} (not a {descriptor.name})"
    return None


def parse_binary(data: bytes, message, path="<bytes>", what: str | None = None):
    """Parse ``data`` into ``message`` or raise ParseError naming ``path`` and the spot."""
    what = what or message.DESCRIPTOR.name
    if len(data) > MAX_BYTES:
        raise ParseError(path, f"{len(data):,} bytes is over protobuf's 2 GB limit for one {what}")
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        where = locate_wire_error(data, message.DESCRIPTOR)
        detail = where or str(e) or "malformed data"
        raise ParseError(path, f"not a valid binary {what}: {detail}") from None
    bad = _bad_string(message)
    if bad:
        raise ParseError(path, f"not a valid binary {what}: {bad}")
    return message


def _bad_string(message, path: str = "") -> str | None:
    """The first string field that is not UTF-8 (a damaged name would otherwise fail
    later, far from the file), or None."""
    for fd, value in message.ListFields():
        here = f"{path}.{fd.name}" if path else fd.name
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            items = enumerate(value) if is_repeated(fd) else [(None, value)]
            for i, sub in items:
                bad = _bad_string(sub, here if i is None else f"{here}[{i}]")
                if bad:
                    return bad
        elif fd.type == FieldDescriptor.TYPE_STRING:
            # protobuf hands back bytes (not str) for a proto2 string that is not UTF-8
            for i, v in enumerate(value if is_repeated(fd) else [value]):
                if isinstance(v, bytes):
                    name = f"{here}[{i}]" if is_repeated(fd) else here
                    return f"{name}: {v[:40]!r} is not UTF-8 text"
    return None


def read_binary(path, message, what: str | None = None):
    """Read the binary protobuf file ``path`` into ``message`` and return it."""
    what = what or message.DESCRIPTOR.name
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ParseError(path, "no such file") from None
    except IsADirectoryError:
        raise ParseError(path, f"is a directory, expected a binary {what}") from None
    except PermissionError:
        raise ParseError(path, "permission denied") from None
    if not data:
        raise ParseError(path, f"empty file, expected a binary {what}")
    return parse_binary(data, message, path, what)


def write_binary(message, path) -> None:
    """Serialise ``message`` to ``path`` atomically (temporary name, then rename)."""
    atomic_write_bytes(path, message.SerializeToString())


def read_caffemodel(path, upgrade: bool = True) -> caffe_pb2.NetParameter:
    """A binary NetParameter with weights; V0/V1 models are upgraded unless told not to.

    Fork parameters stored at numbers BVLC uses (R-FCN's ``roi_pooling_param`` = 147,
    ...) are re-read by layer type first (``fork_binary``), upgrade or not.
    """
    net = read_binary(path, caffe_pb2.NetParameter(), "NetParameter (.caffemodel)")
    fork_binary.resolve_fork_fields(net, str(path))  # fork fields at BVLC's numbers, by layer type
    if upgrade:
        from . import upgrade as _up

        _up.upgrade_net(net, str(path))
    return net


def read_blobproto(path) -> caffe_pb2.BlobProto:
    """A binary BlobProto, e.g. a mean file (.binaryproto)."""
    return read_binary(path, caffe_pb2.BlobProto(), "BlobProto (.binaryproto)")


def read_solverstate(path) -> caffe_pb2.SolverState:
    return read_binary(path, caffe_pb2.SolverState(), "SolverState (.solverstate)")


def read_blobproto_vector(path) -> caffe_pb2.BlobProtoVector:
    return read_binary(path, caffe_pb2.BlobProtoVector(), "BlobProtoVector")


write_caffemodel = write_binary
write_blobproto = write_binary
write_solverstate = write_binary
