"""Prototxt (protobuf text format) files: nets and solvers, in and out.

Accepts everything Caffe's text parser does (``#`` comments, single or double
quotes, ``name: value`` and ``name { ... }`` / ``name: { ... }`` forms, repeated
fields given one by one or as ``[a, b]``). Every failure raises
``ParseError(path, detail, line, column)``; unknown fields that belong to a known
Caffe fork say which fork. Reading a net or solver also upgrades legacy formats
(see ``upgrade``), as Caffe does on load.
"""

from __future__ import annotations

import re

from google.protobuf import text_format

from ..errors import ParseError
from ..proto import caffe_pb2
from . import forks
from .atomic import atomic_write_bytes

_POS = re.compile(r"^(\d+):(\d+) : ")
_NO_FIELD = re.compile(r'has no field named "([^"]+)"')
_NO_ENUM = re.compile(r'Enum type "caffe\.([\w.]+)" has no value')


def _enum_values(qualified: str) -> str:
    """'MAX, AVE, STOCHASTIC' for 'PoolingParameter.PoolMethod' ('' if unknown)."""
    parts = qualified.split(".")
    desc = caffe_pb2.DESCRIPTOR
    try:
        if len(parts) == 1:
            enum = desc.enum_types_by_name[parts[0]]
        else:
            msg = desc.message_types_by_name[parts[0]]
            for p in parts[1:-1]:
                msg = msg.nested_types_by_name[p]
            enum = msg.enum_types_by_name[parts[-1]]
    except KeyError:
        return ""
    return ", ".join(v.name for v in enum.values)


def _read_text(path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ParseError(path, "no such file") from None
    except IsADirectoryError:
        raise ParseError(path, "is a directory, expected a prototxt file") from None
    except PermissionError:
        raise ParseError(path, "permission denied") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        # A binary file given where text was expected is a common slip.
        raise ParseError(
            path,
            f"not a text prototxt (byte {e.start} is not UTF-8); "
            "is this a binary file such as a .caffemodel?",
        ) from None


def _brace_problem(text: str):
    """(line, column, detail) of the first unbalanced brace, or None.

    Strings and comments are skipped, so braces inside them do not count.
    """
    stack = []
    line, col = 1, 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
        elif ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            col += j - i
            i = j + 1
            continue
        elif ch == "{":
            stack.append((line, col))
        elif ch == "}":
            if not stack:
                return line, col, "unbalanced braces: '}' without a matching '{'"
            stack.pop()
        i += 1
    if stack:
        ln, cl = stack[-1]
        return ln, cl, f"unbalanced braces: '{{' opened at line {ln} is never closed"
    return None


def parse_text(text: str, message, path="<string>"):
    """Parse prototxt ``text`` into ``message`` (merged in place) and return it."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raw = str(e)
        m = _POS.match(raw)
        detail = raw[m.end():] if m else raw
        line = e.GetLine() if hasattr(e, "GetLine") else None
        column = e.GetColumn() if hasattr(e, "GetColumn") else None
        detail = detail.rstrip(".")
        nf = _NO_FIELD.search(detail)
        if nf:
            detail += forks.fork_hint_for_field(nf.group(1))
        ne = _NO_ENUM.search(detail)
        if ne and _enum_values(ne.group(1)):
            detail += f" (valid: {_enum_values(ne.group(1))})"
        braces = _brace_problem(text)
        if braces is not None and ("}" in detail or "end of input" in detail.lower()):
            line, column, detail = braces[0], braces[1], braces[2]
        raise ParseError(path, detail, line, column) from None
    return message


def read_text(path, message):
    """Parse the prototxt file ``path`` into ``message`` and return it."""
    return parse_text(_read_text(path), message, path)


def detect_kind(text: str) -> str:
    """``"net"`` or ``"solver"``: which message the prototxt text holds.

    Tries both parses; when both succeed (e.g. a file with only ``name:``), it is a
    net. When both fail, the parse that got further decides (its error is raised
    by ``read_any``).
    """
    errs = {}
    for kind, cls in (("solver", caffe_pb2.SolverParameter), ("net", caffe_pb2.NetParameter)):
        try:
            text_format.Parse(text, cls())
        except text_format.ParseError as e:
            errs[kind] = e
    if "net" not in errs:
        return "net"
    if "solver" not in errs:
        return "solver"
    def reach(e):
        return (e.GetLine() or 0, e.GetColumn() or 0) if hasattr(e, "GetLine") else (0, 0)
    return "solver" if reach(errs["solver"]) > reach(errs["net"]) else "net"


def read_any(path):
    """Read a prototxt that may be a net or a solver; returns ``(kind, message)``, upgraded."""
    text = _read_text(path)
    kind = detect_kind(text)
    if kind == "solver":
        msg = parse_text(text, caffe_pb2.SolverParameter(), path)
        _upgrade().upgrade_solver(msg, str(path))
    else:
        msg = parse_text(text, caffe_pb2.NetParameter(), path)
        _upgrade().upgrade_net(msg, str(path))
    return kind, msg


def read_net(path, upgrade: bool = True) -> caffe_pb2.NetParameter:
    """Read a net prototxt; legacy formats are upgraded unless ``upgrade=False``."""
    net = read_text(path, caffe_pb2.NetParameter())
    if upgrade:
        _upgrade().upgrade_net(net, str(path))
    return net


def read_solver(path, upgrade: bool = True) -> caffe_pb2.SolverParameter:
    """Read a solver prototxt; the legacy solver_type and inline V1 nets are upgraded."""
    solver = read_text(path, caffe_pb2.SolverParameter())
    if upgrade:
        _upgrade().upgrade_solver(solver, str(path))
    return solver


def to_text(message) -> str:
    """The prototxt text of ``message`` (Caffe's layout: two-space indent)."""
    return text_format.MessageToString(message, as_utf8=True)


def write_text(message, path) -> None:
    """Write ``message`` as prototxt to ``path`` atomically."""
    atomic_write_bytes(path, to_text(message).encode("utf-8"))


def _upgrade():
    from . import upgrade  # local import: upgrade is a sibling, kept lazy for start-up time

    return upgrade


__all__ = [
    "parse_text",
    "read_text",
    "read_net",
    "read_solver",
    "read_any",
    "detect_kind",
    "to_text",
    "write_text",
]
