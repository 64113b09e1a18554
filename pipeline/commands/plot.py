"""``pipeline plot LOG_OR_METRICS [--out curves.png] [--title T]``: training curves as a PNG.

The input is either

- a training log in Caffe's glog format (ours from ``pipeline train 2> train.log``, or
  real Caffe's): read with ``pipeline parse_log``'s parser, so the same rules apply
  (rows start after the ``Solving`` line; ``Train net output #i: name = v`` and
  ``Test net output #i: name = v`` lines give the values; like Caffe's
  ``parse_log.py``, a table keeps its first row only once a second one begins); or
- the JSON-lines metrics file ``pipeline train`` appends to
  (``<snapshot_prefix>_metrics.jsonl``): records ``{"phase": "train", "iteration": i,
  "loss": smoothed, "outputs": {name: value}, "lr": ...}`` and ``{"phase": "test",
  "net": k, "iteration": i, "outputs": {...}}``. Runs appended one after another are
  told apart by the iteration going backwards; only the last run is drawn.

Which one it is comes from the content (a first line that is a JSON object means
metrics). Drawn: train outputs and test outputs against iteration; outputs named
``*loss*`` share the left panel, the rest (accuracy, ...) the right one. An output
holding several values (e.g. per-class accuracy) is drawn as ``name[i]``; outputs
of test net k > 0 are named ``net<k>/name``. ``--out`` defaults to the input path
with ``.png`` for its suffix. Needs matplotlib (``pip install 'pipeline[plot]'``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import DataError
from .flags import Parser
from .parse_log import parse_log

_ROW_META = ("NumIters", "Seconds", "LearningRate")


def _add(series: dict, name: str, iteration: float, value) -> None:
    values = value if isinstance(value, list) else [value]
    for i, v in enumerate(values):
        key = name if len(values) == 1 else f"{name}[{i}]"
        its, vals = series.setdefault(key, ([], []))
        its.append(float(iteration))
        vals.append(float(v))


def curves_from_log(path) -> tuple[dict, dict]:
    """``(train, test)`` series ``{name: (iterations, values)}`` from a Caffe-format log."""
    train_rows, test_rows = parse_log(path)
    out: tuple[dict, dict] = ({}, {})
    for rows, series in zip((train_rows, test_rows), out):
        for row in rows:
            for name, value in row.items():
                if name not in _ROW_META:
                    _add(series, name, row["NumIters"], value)
    return out


def _records(path: Path) -> list[tuple[int, dict]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
            if not isinstance(rec, dict) or "iteration" not in rec or rec.get("phase") not in ("train", "test"):
                raise DataError(f"{path}:{lineno}: expected a metrics record with 'phase' (train or test) and "
                                f"'iteration', got {line.strip()[:80]!r}")
            records.append((lineno, rec))
    return records


def curves_from_metrics(path) -> tuple[dict, dict]:
    """``(train, test)`` series from a metrics JSON-lines file (the last run in it)."""
    path = Path(path)
    records = _records(path)
    start = 0
    for i in range(1, len(records)):
        if records[i][1]["iteration"] < records[i - 1][1]["iteration"]:
            start = i  # a later run was appended to the same file
    train: dict = {}
    test: dict = {}
    for lineno, rec in records[start:]:
        outputs = rec.get("outputs") or {}
        if not isinstance(outputs, dict):
            raise DataError(f"{path}:{lineno}: 'outputs' must be an object of name: value")
        try:
            if rec["phase"] == "train":
                for name, value in outputs.items():
                    _add(train, name, rec["iteration"], value)
            else:
                net = int(rec.get("net", 0))
                for name, value in outputs.items():
                    _add(test, name if net == 0 else f"net{net}/{name}", rec["iteration"], value)
        except (TypeError, ValueError):
            raise DataError(f"{path}:{lineno}: output values must be numbers or lists of numbers") from None
    return train, test


def is_metrics_file(path) -> bool:
    """True when the first non-blank line of ``path`` is a JSON object (a metrics file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    try:
                        return isinstance(json.loads(line), dict)
                    except json.JSONDecodeError:
                        return False
    except FileNotFoundError:
        raise DataError(f"{path}: no such log or metrics file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    raise DataError(f"{path}: the file is empty")


def read_curves(path) -> tuple[dict, dict]:
    """``(train, test)`` series from a Caffe-format log or a metrics file."""
    return curves_from_metrics(path) if is_metrics_file(path) else curves_from_log(path)


def plot(argv) -> int:
    p = Parser(prog="pipeline plot",
               description="Draw training curves (loss, accuracy, ... against iteration) from a Caffe-format "
                           "training log or a pipeline metrics file (.jsonl) into a PNG.")
    p.add_argument("source", metavar="LOG_OR_METRICS", help="training log (glog lines) or <prefix>_metrics.jsonl")
    p.add_argument("--out", default="", help="Optional; the PNG to write (default: the input with .png)")
    p.add_argument("--title", default="", help="Optional; a title for the figure (default: the input's name)")
    a = p.parse_args(argv)
    from ..visualize import plot_curves, require_matplotlib

    require_matplotlib()  # say how to install it before reading anything
    source = Path(a.source)
    train, test = read_curves(source)
    if not train and not test:
        raise DataError(f"{source}: no complete train or test outputs to plot")
    out = Path(a.out) if a.out else source.with_suffix(".png")
    if out.resolve() == source.resolve():
        raise DataError(f"--out {out}: would overwrite the input; choose another name")
    plot_curves(train, test, out, title=a.title or source.name)
    names = ", ".join([f"train {k}" for k in train] + [f"test {k}" for k in test])
    print(f"pipeline plot: wrote {out} ({names})", file=sys.stderr)
    return 0
