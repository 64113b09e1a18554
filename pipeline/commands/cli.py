"""Entry points: ``pipeline <command>`` and Caffe's stand-alone tools.

``COMMANDS`` maps each ``pipeline`` sub-command to its function (Caffe's
``g_brew_map``); an unknown one lists the available commands. Every function takes
``argv`` (the arguments after the command name) and returns an exit code. Errors
from ``pipeline/`` become one line on stderr here and nowhere else.
"""

from __future__ import annotations

import importlib
import sys

from ..errors import NotImplementedYet, PipelineError
from . import upgrade


def _not_yet(name: str, issue: str):
    def command(argv) -> int:
        raise NotImplementedYet(f"{name}: not implemented yet ({issue})")

    command.__doc__ = f"{name} (not implemented yet)"
    return command


def _lazy(module: str, func: str):
    """A command whose module (and torch) is imported only when it runs, so the file
    tools start quickly."""

    def command(argv) -> int:
        return getattr(importlib.import_module(f"{__package__}.{module}"), func)(argv)

    command.__doc__ = f"pipeline.commands.{module}.{func}"
    return command


COMMANDS = {
    "train": _lazy("train", "train"),
    "test": _lazy("test", "test"),
    "time": _lazy("time", "time"),
    "device_query": _lazy("device_query", "device_query"),
    "draw": _lazy("draw", "draw"),
    "summary": _lazy("summary", "summary"),
    "parse_log": _lazy("parse_log", "parse_log_command"),
    "plot": _lazy("plot", "plot"),
    "classify": _lazy("classify", "classify"),
    "export": _lazy("export", "export"),
}

TOOLS = {
    "convert_imageset": _lazy("convert_imageset", "convert_imageset"),
    "compute_image_mean": _lazy("compute_image_mean", "compute_image_mean"),
    "extract_features": _lazy("extract_features", "extract_features"),
    "upgrade_net_proto_text": upgrade.upgrade_net_proto_text,
    "upgrade_net_proto_binary": upgrade.upgrade_net_proto_binary,
    "upgrade_solver_proto_text": upgrade.upgrade_solver_proto_text,
}


def run_command(name: str, func, argv) -> int:
    """Run ``func(argv)``; typed errors become one stderr line and an exit code."""
    try:
        return int(func(list(argv)) or 0)
    except NotImplementedYet as e:
        print(str(e), file=sys.stderr)
        return 2
    except PipelineError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def main(argv=None) -> int:
    """``pipeline <command> [flags]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    table = {**COMMANDS, **TOOLS}
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: pipeline <command> [args]\n\ncommands:\n  " + "\n  ".join(sorted(table)))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(
            f"pipeline: unknown command '{name}'; available: {', '.join(sorted(table))}",
            file=sys.stderr,
        )
        return 2
    return run_command(f"pipeline {name}", table[name], rest)


def _tool(name):
    def entry(argv=None) -> int:
        argv = sys.argv[1:] if argv is None else argv
        return run_command(name, TOOLS[name], argv)

    entry.__name__ = f"{name}_main"
    return entry


convert_imageset_main = _tool("convert_imageset")
compute_image_mean_main = _tool("compute_image_mean")
extract_features_main = _tool("extract_features")
upgrade_net_proto_text_main = _tool("upgrade_net_proto_text")
upgrade_net_proto_binary_main = _tool("upgrade_net_proto_binary")
upgrade_solver_proto_text_main = _tool("upgrade_solver_proto_text")


def console_main():  # pragma: no cover - thin wrapper for python -m
    sys.exit(main())
