"""``pipeline test``: score a model, as ``caffe test`` does (tools/caffe.cpp ``test()``).

    pipeline test --model M --weights W [--iterations 50] [--gpu 0] [--phase TEST]
                  [--level 0] [--stage a,b]

The net is built for the TEST phase (``--phase TRAIN`` is our extension), the weights
are copied in by layer name, and the net runs ``--iterations`` forward passes. Each
pass logs every element of every output blob (``Batch i, name = v``); at the end come
``Loss: L`` (the mean over passes of the weighted sum of the loss tops) and, for every
output element, its mean over the passes ``name = mean``, followed by
``(* w = w·mean loss)`` when the blob is a loss with weight ``w``. Lines go to stderr
in glog's format, as Caffe writes them.

Numbers follow Caffe's arithmetic: sums and means in float32
(``score_i = Σ_batches v / N``), outputs in Caffe's order (sorted by name, as
``Net::output_blob_indices`` come from a ``std::set``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..net import Net
from ..proto import caffe_pb2
from ..solvers.glog import num
from .common import add_net_flags, glog_to_stderr, phase_from_flag, stages_from_flag
from .devices import parse_gpus, single_device
from .flags import Parser

_LOG = logging.getLogger("pipeline.test")


@dataclass
class Score:
    """What ``score`` measured: the mean loss and one ``(name, mean, loss weight)`` per output element."""

    loss: float
    outputs: list = field(default_factory=list)

    def means(self) -> dict:
        """name -> mean (a list when the output blob has several elements)."""
        out: dict = {}
        for name, mean, _ in self.outputs:
            out.setdefault(name, []).append(mean)
        return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def score(net: Net, iterations: int, log=None) -> Score:
    """Run ``iterations`` forward passes of ``net`` and average its outputs (``caffe test``).

    Returns a ``Score``; logs ``Batch i, name = v`` per pass and the summary lines.
    """
    log = log or _LOG.info
    names = sorted(net.outputs)  # Caffe: net outputs come out of a std::set<string>
    loss_weights = net.blob_loss_weights
    totals: list[np.float32] = []
    owners: list[str] = []
    loss = np.float32(0.0)
    for i in range(iterations):
        result = net.forward()
        loss += np.float32(float(net.loss().detach()))
        idx = 0
        for name in names:
            for v in np.asarray(result[name], np.float32).ravel():
                if i == 0:
                    totals.append(np.float32(v))
                    owners.append(name)
                else:
                    totals[idx] += np.float32(v)
                idx += 1
                log(f"Batch {i}, {name} = {num(v)}")
    loss = np.float32(loss / np.float32(iterations))
    log(f"Loss: {num(loss)}")
    out = Score(float(loss))
    for name, total in zip(owners, totals):
        mean = np.float32(total / np.float32(iterations))
        w = np.float32(loss_weights.get(name, 0.0))
        tail = f" (* {num(w)} = {num(np.float32(w * mean))} loss)" if w else ""
        log(f"{name} = {num(mean)}{tail}")
        out.outputs.append((name, float(mean), float(w)))
    return out


def test(argv) -> int:
    """``pipeline test``: returns 0 after logging the scores."""
    p = Parser(prog="pipeline test", description="Score a model: the mean of each output over N batches.")
    add_net_flags(p, "Optional; network phase (TRAIN or TEST); default TEST.")
    p.add_argument("--weights", default="", help="The trained weights (.caffemodel or .h5) to score.")
    a = p.parse_args(argv)
    if not a.model:
        raise ConfigError("Need a model definition to score (--model).")
    if not a.weights:
        raise ConfigError("Need model weights to score (--weights).")
    if a.iterations < 1:
        raise ConfigError(f"--iterations {a.iterations}: need at least 1")
    phase = phase_from_flag(a.phase, caffe_pb2.TEST)
    gpus = parse_gpus(a.gpu)
    with glog_to_stderr():
        device = single_device(gpus, _LOG.info)
        net = Net(a.model, phase, level=a.level, stages=stages_from_flag(a.stage), device=device,
                  python_layers=not a.no_python_layers)
        net.copy_from(a.weights)
        _LOG.info(f"Running for {a.iterations} iterations.")
        score(net, a.iterations, _LOG.info)
    return 0
