"""Caffe's gflags spellings on top of argparse.

Caffe users type ``-solver x``, ``-solver=x``, ``--solver x`` and ``--solver=x``;
``normalize_flags`` turns the single-dash long forms into double-dash ones so one
argparse parser accepts them all. gflags booleans also take ``--flag=true|false``.
"""

from __future__ import annotations

import argparse
import re

_SINGLE_DASH_LONG = re.compile(r"^-([A-Za-z_][A-Za-z0-9_]+)(=.*)?$")


def normalize_flags(argv):
    """``-name[=v]`` -> ``--name[=v]`` for multi-letter names; everything else unchanged."""
    out = []
    for tok in argv:
        m = _SINGLE_DASH_LONG.match(tok)
        out.append("-" + tok if m else tok)
    return out


def gflag_bool(text: str) -> bool:
    """Parse a gflags boolean value."""
    v = text.strip().lower()
    if v in ("1", "true", "t", "yes", "y"):
        return True
    if v in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2, like the rest."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        return super().parse_args(normalize_flags(args or []), namespace)
