"""Our schema is BVLC Caffe's plus an explicit list of fork additions, and the generated
module never drifts from it.

Three layers of checks:

1. ``pipeline.proto.caffe_pb2`` against a hand-transcribed table of BVLC's schema
   (tests/formats/bvlc_schema_table.py): every message, field number, type, label,
   packed flag and default, every enum's names, values and order, nothing extra -
   except the fork additions allow-listed in tests/formats/fork_schema_table.py
   (fields of the forks whose layers the pipeline runs, each with its number, fork
   and full definition, checked just as strictly, none at a number BVLC uses).
2. ``protos/caffe.proto`` against the committed ``caffe_pb2``: the .proto is
   compiled again with ``grpc_tools.protoc`` and the two FileDescriptorProtos
   must be equal, so an edit to either one alone fails here.
3. The wire: every message with every field set survives binary and text
   round trips, and a few hand-computed byte strings pin numbers and packing.
"""

from __future__ import annotations

import difflib
import importlib.util
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, text_format
from google.protobuf.descriptor import FieldDescriptor as FD

from formats import bvlc_schema_table as bvlc
from formats import fork_schema_table as fork
from pipeline.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "protos"
PROTO_NAME = "caffe.proto"

SCALAR_TYPES = {
    "int32": FD.TYPE_INT32,
    "int64": FD.TYPE_INT64,
    "uint32": FD.TYPE_UINT32,
    "float": FD.TYPE_FLOAT,
    "double": FD.TYPE_DOUBLE,
    "bool": FD.TYPE_BOOL,
    "string": FD.TYPE_STRING,
    "bytes": FD.TYPE_BYTES,
}
TYPE_NAMES = {v: k for k, v in SCALAR_TYPES.items()} | {FD.TYPE_ENUM: "enum", FD.TYPE_MESSAGE: "message"}
FILE = caffe_pb2.DESCRIPTOR
ALL_MESSAGES = sorted(bvlc.MESSAGES)
FORK_MESSAGES = sorted(fork.MESSAGES)
EVERY_MESSAGE = sorted(set(ALL_MESSAGES) | set(FORK_MESSAGES))


def _enum_table(name: str):
    """An enum's values from BVLC's table, else from the fork allow-list (None if neither)."""
    return bvlc.ENUMS.get(name, fork.ENUMS.get(name))


def _table_rows(message: str) -> list:
    """The expected fields of ``message``: BVLC's, plus the allow-listed fork additions."""
    rows = list(bvlc.MESSAGES.get(message, []))
    rows += [f for m, f, _ in fork.ADDITIONS if m == message]
    return rows + list(fork.MESSAGES.get(message, []))


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _expected_type(type_name: str) -> tuple[int, str | None]:
    """(FieldDescriptor type constant, full name of the referenced type or None)."""
    if type_name in SCALAR_TYPES:
        return SCALAR_TYPES[type_name], None
    if _enum_table(type_name) is not None:
        return FD.TYPE_ENUM, f"{bvlc.PACKAGE}.{type_name}"
    if type_name in bvlc.MESSAGES or type_name in fork.MESSAGES:
        return FD.TYPE_MESSAGE, f"{bvlc.PACKAGE}.{type_name}"
    raise AssertionError(f"table names an unknown type {type_name!r}")


def _label(field) -> str:
    # protobuf >= 6 drops FieldDescriptor.label in favour of is_repeated/is_required.
    if hasattr(field, "is_repeated") and hasattr(field, "is_required"):
        if field.is_repeated:
            return bvlc.REPEATED
        return bvlc.REQUIRED if field.is_required else bvlc.OPTIONAL
    return {FD.LABEL_OPTIONAL: bvlc.OPTIONAL, FD.LABEL_REPEATED: bvlc.REPEATED,
            FD.LABEL_REQUIRED: bvlc.REQUIRED}[field.label]


def _is_packed(field) -> bool:
    if hasattr(field, "is_packed"):
        return bool(field.is_packed)
    return field.GetOptions().packed


def _f32(x: float) -> bytes:
    return struct.pack("<f", x)


def _implicit_default(exp: bvlc.Field):
    """What proto2 gives a singular field that declares no default."""
    if _enum_table(exp.type) is not None:
        return next(iter(_enum_table(exp.type).values()))  # the first declared value
    return {"int32": 0, "int64": 0, "uint32": 0, "float": 0.0, "double": 0.0,
            "bool": False, "string": "", "bytes": b""}.get(exp.type)


def _default_problems(field, exp: bvlc.Field) -> list[str]:
    where = f"{field.containing_type.name}.{field.name}"
    actual = field.default_value
    if exp.default is bvlc.NO_DEFAULT:
        problems = []
        if field.has_default_value:
            problems.append(f"{where}: declares default {actual!r}; BVLC declares none")
        if exp.label == bvlc.OPTIONAL and exp.type not in bvlc.MESSAGES and exp.type not in fork.MESSAGES:
            want = _implicit_default(exp)
            if actual != want:
                problems.append(f"{where}: implicit default {actual!r}, expected {want!r}")
        return problems
    if not field.has_default_value:
        return [f"{where}: declares no default; BVLC's is {exp.default!r}"]
    if _enum_table(exp.type) is not None:
        want = _enum_table(exp.type)[exp.default]
        value = field.enum_type.values_by_number.get(actual) if field.enum_type else None
        ok = actual == want and value is not None and value.name == exp.default
    elif exp.type == "float":
        ok = isinstance(actual, float) and _f32(actual) == _f32(exp.default)
    elif exp.type == "double":
        ok = isinstance(actual, float) and actual == exp.default
    else:  # int, bool, string: same Python type (True == 1 must not pass) and value
        ok = type(actual) is type(exp.default) and actual == exp.default
    return [] if ok else [f"{where}: default {actual!r}, BVLC's is {exp.default!r}"]


def _field_problems(message_name: str) -> list[str]:
    desc = FILE.message_types_by_name.get(message_name)
    if desc is None:
        return [f"message {message_name} is missing from caffe_pb2"]
    problems = []
    ours = {f.name: f for f in desc.fields}
    table = {f.name: f for f in _table_rows(message_name)}
    for name in sorted(set(table) - set(ours)):
        problems.append(f"{message_name}.{name}: missing (the table has it as number {table[name].number})")
    for name in sorted(set(ours) - set(table)):
        problems.append(f"{message_name}.{name}: not in BVLC's schema nor in the fork allow-list "
                        f"(number {ours[name].number})")
    for name in sorted(set(table) & set(ours)):
        field, exp = ours[name], table[name]
        where = f"{message_name}.{name}"
        if field.number != exp.number:
            problems.append(f"{where}: number {field.number}, BVLC's is {exp.number}")
        want_type, want_ref = _expected_type(exp.type)
        if field.type != want_type:
            problems.append(f"{where}: type {TYPE_NAMES.get(field.type, field.type)}, BVLC's is {exp.type}")
        else:
            ref = field.enum_type or field.message_type
            if want_ref is not None and ref.full_name != want_ref:
                problems.append(f"{where}: refers to {ref.full_name}, BVLC's field refers to {want_ref}")
        if _label(field) != exp.label:
            problems.append(f"{where}: label {_label(field)}, BVLC's is {exp.label}")
        if _is_packed(field) != exp.packed or field.GetOptions().packed != exp.packed:
            problems.append(f"{where}: packed={_is_packed(field)}, BVLC's is packed={exp.packed}")
        problems += _default_problems(field, exp)
    return problems


def _default_json_name(name: str) -> str:
    """protoc's JSON name for a field without a json_name option (lowerCamelCase)."""
    out, upper = [], False
    for ch in name:
        if ch == "_":
            upper = True
        else:
            out.append(ch.upper() if upper else ch)
            upper = False
    return "".join(out)


def _normalise(fdp: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """Drop what differs between protoc versions but not between schemas.

    * ``source_code_info`` (comments and spans) is not part of the schema; it is
      only present when asked for, and cleared in case a generator adds it.
    * ``json_name``: newer protoc (the one inside grpc_tools) records every
      field's derived JSON name in descriptor sets, protoc 3.21 (which generated
      caffe_pb2.py) does not. A derived name carries no information, so it is
      cleared only where it equals the derivation; a custom ``json_name`` option
      would survive and show up as a difference.
    * ``syntax``: proto2 files leave it empty; a generator that spells it out as
      "proto2" means the same thing.
    * float/double ``default_value`` text: protoc writes the shortest spelling
      ("1e-08"), while the upb runtime's ``CopyToProto`` prints the stored float32
      with 9 digits ("9.99999994e-09"). Both sides are rewritten as the exact bit
      pattern of the value the runtime uses (float32 for float fields), so any
      change of value is still caught.
    """
    out = descriptor_pb2.FileDescriptorProto()
    out.CopyFrom(fdp)
    out.ClearField("source_code_info")
    if out.syntax == "proto2":
        out.ClearField("syntax")

    def canonical(f):
        if f.HasField("json_name") and f.json_name == _default_json_name(f.name):
            f.ClearField("json_name")
        if f.HasField("default_value") and f.type == f.TYPE_FLOAT:
            f.default_value = "f32:" + _f32(float(f.default_value)).hex()
        elif f.HasField("default_value") and f.type == f.TYPE_DOUBLE:
            f.default_value = "f64:" + float(f.default_value).hex()

    def strip(messages):
        for m in messages:
            for f in list(m.field) + list(m.extension):
                canonical(f)
            strip(m.nested_type)

    strip(out.message_type)
    for f in out.extension:
        canonical(f)
    return out


def _compile(proto_dir: Path, out_dir: Path) -> descriptor_pb2.FileDescriptorProto:
    """Compile proto_dir/caffe.proto with grpc_tools' protoc; return its descriptor."""
    out = out_dir / "caffe.desc"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={proto_dir}",
           f"--descriptor_set_out={out}", str(proto_dir / PROTO_NAME)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"grpc_tools.protoc failed on {proto_dir / PROTO_NAME}:\n{res.stderr}"
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert len(fds.file) == 1, [f.name for f in fds.file]
    return fds.file[0]


def _committed() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto()
    FILE.CopyToProto(fdp)
    return fdp


def _drift(compiled: descriptor_pb2.FileDescriptorProto) -> str:
    """'' when the compiled .proto equals caffe_pb2, else a readable diff."""
    a, b = _normalise(compiled), _normalise(_committed())
    if a == b:
        return ""
    diff = difflib.unified_diff(
        text_format.MessageToString(b).splitlines(), text_format.MessageToString(a).splitlines(),
        "caffe_pb2.DESCRIPTOR (committed)", "protos/caffe.proto (compiled now)", lineterm="", n=4)
    return "\n".join(list(diff)[:80]) or "descriptors differ (text forms equal: field presence or ordering)"


needs_grpc_tools = pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None,
    reason="grpc_tools is not installed (pip install grpcio-tools, the 'test' extra): "
           "cannot recompile protos/caffe.proto to compare with caffe_pb2")


# ---------------------------------------------------------------------------
# 0. The table itself is consistent (a typo there would weaken every test below)
# ---------------------------------------------------------------------------

def test_table_is_self_consistent():
    for message, fields in bvlc.MESSAGES.items():
        numbers = [f.number for f in fields]
        names = [f.name for f in fields]
        assert len(set(numbers)) == len(numbers), f"table: duplicate number in {message}"
        assert len(set(names)) == len(names), f"table: duplicate name in {message}"
        for f in fields:
            _expected_type(f.type)  # every referenced type is in the table
            assert f.label in (bvlc.OPTIONAL, bvlc.REPEATED, bvlc.REQUIRED), f
            assert not f.packed or (f.label == bvlc.REPEATED and f.type in SCALAR_TYPES), f
            if f.type in bvlc.ENUMS and f.default is not bvlc.NO_DEFAULT:
                assert f.default in bvlc.ENUMS[f.type], f"table: {message}.{f.name} default"
    for enum, values in bvlc.ENUMS.items():
        assert len(set(values.values())) == len(values), f"table: duplicate value in {enum}"
        outer = enum.rpartition(".")[0]
        assert not outer or outer in bvlc.MESSAGES, enum
    # 2b's sub-message table names 49 messages, all of them described in 2a/2c.
    assert [n for _, n, _ in bvlc.LAYER_PARAMS] == list(range(100, 149))
    assert all(m in bvlc.MESSAGES for _, _, m in bvlc.LAYER_PARAMS)


# ---------------------------------------------------------------------------
# 1. caffe_pb2 == BVLC's schema
# ---------------------------------------------------------------------------

def test_package_and_file():
    assert FILE.package == "caffe"
    assert FILE.name == PROTO_NAME
    assert list(FILE.dependencies) == []  # BVLC's caffe.proto imports nothing
    fdp = _committed()
    assert fdp.syntax in ("", "proto2"), fdp.syntax
    assert not fdp.extension and not fdp.service


def test_same_set_of_messages_and_top_level_enums():
    assert not set(ALL_MESSAGES) & set(FORK_MESSAGES)
    assert sorted(FILE.message_types_by_name) == EVERY_MESSAGE
    top_enums = sorted(e for e in bvlc.ENUMS if "." not in e)
    assert sorted(FILE.enum_types_by_name) == top_enums


@pytest.mark.parametrize("message", ALL_MESSAGES)
def test_message_fields_match_bvlc(message):
    problems = _field_problems(message)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("message", FORK_MESSAGES)
def test_fork_message_fields_match_the_allow_list(message):
    problems = _field_problems(message)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("message", EVERY_MESSAGE)
def test_message_structure(message):
    desc = FILE.message_types_by_name[message]
    numbers = [f.number for f in desc.fields]
    assert len(set(numbers)) == len(numbers), f"{message}: duplicate field numbers {sorted(numbers)}"
    assert all(1 <= n < 19000 or 19999 < n <= 536870911 for n in numbers), numbers
    assert not desc.nested_types, f"{message}: BVLC nests no messages"
    assert not desc.oneofs, f"{message}: BVLC has no oneofs"
    nested = sorted(e.name for e in desc.enum_types)
    expected = sorted(e.rpartition(".")[2] for e in list(bvlc.ENUMS) + list(fork.ENUMS)
                      if e.rpartition(".")[0] == message)
    assert nested == expected, f"{message}: nested enums {nested}, the tables' are {expected}"


@pytest.mark.parametrize("enum", sorted(bvlc.ENUMS) + sorted(fork.ENUMS))
def test_enum_values_match_bvlc(enum):
    outer, _, name = enum.rpartition(".")
    desc = (FILE.message_types_by_name[outer].enum_types_by_name if outer else FILE.enum_types_by_name)[name]
    assert desc.full_name == f"caffe.{enum}"
    # Order matters too: a field without a declared default takes the first value.
    assert [(v.name, v.number) for v in desc.values] == list(_enum_table(enum).items())


def test_field_check_catches_a_wrong_default(monkeypatch):
    """The comparison is able to fail: feed it a table with one default changed."""
    rows = [f._replace(default=1e-4) if f.name == "eps" else f for f in bvlc.MESSAGES["BatchNormParameter"]]
    monkeypatch.setitem(bvlc.MESSAGES, "BatchNormParameter", rows)
    assert _field_problems("BatchNormParameter") == [
        f"BatchNormParameter.eps: default {caffe_pb2.BatchNormParameter().eps!r}, BVLC's is 0.0001"]
    rows = [f._replace(number=9) if f.name == "axis" else f for f in bvlc.MESSAGES["TileParameter"]]
    monkeypatch.setitem(bvlc.MESSAGES, "TileParameter", rows)
    assert _field_problems("TileParameter") == ["TileParameter.axis: number 1, BVLC's is 9"]


# ---------------------------------------------------------------------------
# 1b. The fork allow-list: explicit, attributed, colliding with nothing of BVLC's
# ---------------------------------------------------------------------------

def test_fork_additions_collide_with_nothing_in_bvlc():
    for message, field, _ in fork.ADDITIONS:
        bvlc_rows = bvlc.MESSAGES[message]  # additions go to BVLC messages only
        assert field.number not in {f.number for f in bvlc_rows}, f"{message}.{field.name} = {field.number}"
        assert field.name not in {f.name for f in bvlc_rows}, f"{message}.{field.name}"
    for message in {m for m, _, _ in fork.ADDITIONS}:
        numbers = [f.number for m, f, _ in fork.ADDITIONS if m == message]
        assert len(numbers) == len(set(numbers)), f"{message}: duplicate fork numbers {sorted(numbers)}"


def test_fork_additions_name_their_fork():
    """Each LayerParameter/PoolingParameter addition is attributed like forks.FORK_FIELDS says."""
    from pipeline.formats import forks

    for message, field, name in fork.ADDITIONS:
        assert name in vars(forks).values(), f"{message}.{field.name}: unknown fork {name!r}"
        if message in ("LayerParameter", "PoolingParameter"):
            assert forks.FORK_FIELDS[field.name].startswith(name), field.name
            assert forks.is_supported_field(field.name)
    assert set(fork.MESSAGE_FORK) == set(fork.MESSAGES)
    layer_fields = {f.type: f.name for m, f, _ in fork.ADDITIONS if m == "LayerParameter"}
    for message, name in fork.MESSAGE_FORK.items():
        if message in layer_fields:  # a *_param message: the field and the message agree on the fork
            assert forks.FORK_FIELDS[layer_fields[message]] == name, message


def test_field_check_catches_an_unlisted_fork_field(monkeypatch):
    """Dropping a row from the allow-list makes the field an error again: BVLC's checks stay strict."""
    rows = [a for a in fork.ADDITIONS if a[1].name != "prior_box_param"]
    monkeypatch.setattr(fork, "ADDITIONS", rows)
    assert _field_problems("LayerParameter") == [
        "LayerParameter.prior_box_param: not in BVLC's schema nor in the fork allow-list (number 203)"]
    moved = [(m, f._replace(number=147) if f.name == "roi_pooling_param" else f, k) for m, f, k in fork.ADDITIONS]
    monkeypatch.setattr(fork, "ADDITIONS", moved)
    assert "LayerParameter.roi_pooling_param: number 8266711, BVLC's is 147" in _field_problems("LayerParameter")


@pytest.mark.parametrize("msg, wire", [
    # prior_box_param at 203: tag (203 << 3 | 2) = 1626 = varint da 0c; min_size 30.0f at field 1
    (caffe_pb2.LayerParameter(prior_box_param=caffe_pb2.PriorBoxParameter(min_size=[30.0])),
     b"\xda\x0c\x05\x0d\x00\x00\xf0\x41"),
    # roi_pooling_param at 8266711 (py-faster-rcnn): tag 66133690 = varint ba bd c4 1f
    (caffe_pb2.LayerParameter(roi_pooling_param=caffe_pb2.ROIPoolingParameter(pooled_h=7)),
     b"\xba\xbd\xc4\x1f\x02\x08\x07"),
    # TransformationParameter.crop_h at 11 (SSD)
    (caffe_pb2.TransformationParameter(crop_h=300), b"\x58\xac\x02"),
    # PoolingParameter.ceil_mode at 1013: tag (1013 << 3 | 0) = 8104 = varint a8 3f
    (caffe_pb2.PoolingParameter(ceil_mode=False), b"\xa8\x3f\x00"),
])
def test_fork_wire_bytes(msg, wire):
    assert _hex(msg.SerializeToString()) == _hex(wire)
    assert type(msg).FromString(wire) == msg


# ---------------------------------------------------------------------------
# 2. protos/caffe.proto == committed caffe_pb2 (no drift)
# ---------------------------------------------------------------------------

@needs_grpc_tools
def test_generated_module_matches_proto(tmp_path):
    drift = _drift(_compile(PROTO_DIR, tmp_path))
    assert not drift, (
        "pipeline/proto/caffe_pb2.py is out of date with protos/caffe.proto; regenerate with\n"
        "  protoc --proto_path=protos --python_out=pipeline/proto protos/caffe.proto\n" + drift)


# Edits to a copy of the .proto, each of which must be reported as drift.
MUTATIONS = {
    "default": ("optional float eps = 3 [default = 1e-5];", "optional float eps = 3 [default = 1e-4];"),
    "number": ("optional int32 tiles = 2;", "optional int32 tiles = 3;"),
    "packed": ("repeated int64 dim = 1 [packed = true];", "repeated int64 dim = 1;"),
    "new field": ("optional ClipParameter clip_param = 148;",
                  "optional ClipParameter clip_param = 148;\n  optional float extra = 9999;"),
    "enum value": ("    FLOOR = 1;\n", "    FLOOR = 1;\n    NEAREST = 2;\n"),
    "label": ("required float min = 1;", "optional float min = 1;"),
}


@needs_grpc_tools
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_drift_check_fails_when_proto_changes(tmp_path, mutation):
    old, new = MUTATIONS[mutation]
    text = (PROTO_DIR / PROTO_NAME).read_text()
    assert text.count(old) == 1, f"mutation {mutation!r} no longer applies to caffe.proto"
    copy = tmp_path / "protos"
    copy.mkdir()
    (copy / PROTO_NAME).write_text(text.replace(old, new))
    assert _drift(_compile(copy, tmp_path)), f"drift check missed a changed {mutation}"


# ---------------------------------------------------------------------------
# 3. The wire: every field set, binary and text round trips
# ---------------------------------------------------------------------------

def _values(field) -> list:
    """Two non-default values for a scalar field (first one used when singular)."""
    t = field.type
    default = None if _label(field) == bvlc.REPEATED else field.default_value
    if t == FD.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return sorted(numbers, key=lambda n: n == default)[:2]
    if t == FD.TYPE_BOOL:
        return [not default, bool(default)]
    return {
        FD.TYPE_INT32: [-7, 2**31 - 1],         # negative: 10-byte varint
        FD.TYPE_INT64: [-(2**40), 2**63 - 1],
        FD.TYPE_UINT32: [2**32 - 1, 3],
        FD.TYPE_FLOAT: [1.5, -0.03125],         # exact in float32
        FD.TYPE_DOUBLE: [0.1, -1e300],
        FD.TYPE_STRING: [f"{field.name}-\u00e9\u4e2d", ""],
        FD.TYPE_BYTES: [b"\x00\xff\x80bytes", b""],
    }[t]


def _fill(msg, depth=0):
    """Set every field of msg (repeated ones to two entries), recursing into messages."""
    assert depth < 8, "unexpected recursion in the schema"
    for field in msg.DESCRIPTOR.fields:
        if field.type == FD.TYPE_MESSAGE:
            if _label(field) == bvlc.REPEATED:
                for _ in range(2):
                    _fill(getattr(msg, field.name).add(), depth + 1)
            else:
                sub = getattr(msg, field.name)
                sub.SetInParent()
                _fill(sub, depth + 1)
        elif _label(field) == bvlc.REPEATED:
            getattr(msg, field.name).extend(_values(field))
        else:
            setattr(msg, field.name, _values(field)[0])
    return msg


@pytest.mark.parametrize("message", EVERY_MESSAGE)
def test_every_field_round_trips(message):
    cls = getattr(caffe_pb2, message)
    msg = _fill(cls())
    assert msg.IsInitialized()
    assert len(msg.ListFields()) == len(msg.DESCRIPTOR.fields), "some field was left unset"
    for field in msg.DESCRIPTOR.fields:
        single = field.type == FD.TYPE_ENUM and len(field.enum_type.values) == 1  # SSD's AnnotationType
        if _label(field) != bvlc.REPEATED and field.type != FD.TYPE_MESSAGE and not single:
            assert getattr(msg, field.name) != field.default_value, f"{field.name} left at its default"

    data = msg.SerializeToString()
    back = cls.FromString(data)
    assert back == msg
    assert back.SerializeToString(deterministic=True) == msg.SerializeToString(deterministic=True)
    assert len(back.ListFields()) == len(msg.DESCRIPTOR.fields)

    # prototxt (text format) too: that is how nets and solvers are written.
    assert text_format.Parse(text_format.MessageToString(msg), cls()) == msg


def _hex(b: bytes) -> str:
    return b.hex(" ")


@pytest.mark.parametrize("msg, wire", [
    # packed int64: tag (1 << 3 | 2), length 3, varints 1 and 300
    (caffe_pb2.BlobShape(dim=[1, 300]), b"\x0a\x03\x01\xac\x02"),
    # packed float: tag (5 << 3 | 2), length 4, 1.0f little-endian
    (caffe_pb2.BlobProto(data=[1.0]), b"\x2a\x04\x00\x00\x80\x3f"),
    # unpacked float: tag (6 << 3 | 5) per element
    (caffe_pb2.Datum(float_data=[1.0, 2.0]), b"\x35\x00\x00\x80\x3f\x35\x00\x00\x00\x40"),
    # LayerParameter at 100: tag (100 << 3 | 2) = 802 = varint a2 06
    (caffe_pb2.NetParameter(layer=[caffe_pb2.LayerParameter(name="a")]), b"\xa2\x06\x03\x0a\x01a"),
    # V1 layers at 2, with convolution_param at 10 and num_output 4
    (caffe_pb2.NetParameter(layers=[caffe_pb2.V1LayerParameter(
        convolution_param=caffe_pb2.ConvolutionParameter(num_output=4))]), b"\x12\x04\x52\x02\x08\x04"),
    # clip_param at 148 (post-1.0): tag (148 << 3 | 2) = 1186 = varint a2 09
    (caffe_pb2.LayerParameter(clip_param=caffe_pb2.ClipParameter(min=0.0, max=1.0)),
     b"\xa2\x09\x0a\x0d\x00\x00\x00\x00\x15\x00\x00\x80\x3f"),
    # V1 param at 1001 (varint ca 3e after the wire type)
    (caffe_pb2.V1LayerParameter(param=["w"]), b"\xca\x3e\x01w"),
])
def test_known_wire_bytes(msg, wire):
    assert _hex(msg.SerializeToString()) == _hex(wire)
    assert type(msg).FromString(wire) == msg


def test_packed_fields_also_read_unpacked():
    """Writers that ignore [packed = true] still load (the parser accepts both)."""
    assert list(caffe_pb2.BlobShape.FromString(b"\x08\x01\x08\x02").dim) == [1, 2]
    unpacked = b"\x2d\x00\x00\x80\x3f\x2d\x00\x00\x00\x40"  # BlobProto.data, tag (5 << 3 | 5)
    assert list(caffe_pb2.BlobProto.FromString(unpacked).data) == [1.0, 2.0]
