"""What ``pipeline test``, ``time``, ``device_query`` and ``extract_features`` share.

Caffe's flag readers (``get_phase_from_flags``, ``get_stages_from_flags``), the
flags ``test`` and ``time`` both take, and ``glog_to_stderr``: the package's log
records go to stderr as glog lines while a command runs (``pipeline.solvers.glog``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from ..errors import ConfigError
from ..proto import caffe_pb2
from ..solvers import glog


@contextmanager
def glog_to_stderr():
    """Log the package's INFO records to stderr in glog's format for the ``with`` body."""
    handler = glog.install(level=logging.INFO)
    try:
        yield
    finally:
        glog.remove(handler)


def phase_from_flag(text: str, default: int) -> int:
    """Caffe's ``get_phase_from_flags``: '' -> default, else 'TRAIN' or 'TEST'."""
    if not text:
        return default
    if text in ("TRAIN", "TEST"):
        return caffe_pb2.Phase.Value(text)
    raise ConfigError(f'--phase {text}: phase must be "TRAIN" or "TEST"')


def stages_from_flag(text: str) -> list[str]:
    """``--stage a,b`` -> ['a', 'b'] (Caffe's split on ','; empty names dropped)."""
    return [s for s in (text or "").split(",") if s]


def add_net_flags(p, phase_help: str) -> None:
    """The flags ``test`` and ``time`` share, with Caffe's names and defaults."""
    p.add_argument("--model", default="", help="The model definition protocol buffer text file.")
    p.add_argument("--iterations", type=int, default=50, help="The number of iterations to run.")
    p.add_argument("--gpu", default="", help="Optional; run on the given GPU (the first of a ',' list, or 'all').")
    p.add_argument("--phase", default="", help=phase_help)
    p.add_argument("--level", type=int, default=0, help="Optional; network level.")
    p.add_argument("--stage", default="", help="Optional; network stages, separated by ','.")
    p.add_argument("--no-python-layers", "--no_python_layers", dest="no_python_layers", action="store_true",
                   help="Optional; refuse nets with type \"Python\" layers (they run code the prototxt names).")
