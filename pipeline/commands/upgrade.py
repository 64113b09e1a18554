"""upgrade_net_proto_text, upgrade_net_proto_binary, upgrade_solver_proto_text.

Each reads the old file without upgrading, upgrades it (notes go to stderr) and
writes today's format atomically. One table row per tool.
"""

from __future__ import annotations

import functools
import sys

from ..formats import binary, prototxt
from ..formats import upgrade as up
from .flags import Parser

# tool -> (what it reads, reader, upgrade function, writer)
_TOOLS = {
    "upgrade_net_proto_text": (
        "net prototxt",
        functools.partial(prototxt.read_net, upgrade=False),
        up.upgrade_net,
        prototxt.write_text,
    ),
    "upgrade_net_proto_binary": (
        "binary net (.caffemodel)",
        functools.partial(binary.read_caffemodel, upgrade=False),
        up.upgrade_net,
        binary.write_binary,
    ),
    "upgrade_solver_proto_text": (
        "solver prototxt",
        functools.partial(prototxt.read_solver, upgrade=False),
        up.upgrade_solver,
        prototxt.write_text,
    ),
}


def run(prog: str, argv) -> int:
    what, read, upgrade, write = _TOOLS[prog]
    p = Parser(prog=prog, description=f"Rewrite an old {what} in today's format.")
    p.add_argument("input", help=f"the old {what}")
    p.add_argument("output", help="where to write the upgraded file")
    a = p.parse_args(argv)
    message = read(a.input)
    notes = upgrade(message, a.input)
    write(message, a.output)
    for n in notes:
        print(f"{prog}: {n}", file=sys.stderr)
    state = "upgraded" if notes else "already in today's format; copied"
    print(f"{prog}: {a.input} {state} -> {a.output}", file=sys.stderr)
    return 0


upgrade_net_proto_text = functools.partial(run, "upgrade_net_proto_text")
upgrade_net_proto_binary = functools.partial(run, "upgrade_net_proto_binary")
upgrade_solver_proto_text = functools.partial(run, "upgrade_solver_proto_text")
