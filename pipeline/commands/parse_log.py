"""``pipeline parse_log LOG OUTDIR [--delimiter ,] [--verbose]``: Caffe's ``tools/extra/parse_log.py``.

Reads a training log (Caffe's, or ours: both are glog lines such as
``I0210 13:39:22.381027 25210 solver.cpp:204] Iteration 100, lr = 0.00992565``)
and writes ``OUTDIR/<log name>.train`` and ``OUTDIR/<log name>.test``: CSV tables
with columns ``NumIters, Seconds, LearningRate`` and then one per net output, in
the order the log first shows them, exactly as Caffe's script writes them (Python's
``csv`` excel dialect, so lines end in ``\\r\\n``; numbers as Python floats, so
``NumIters`` reads ``100.0``; a table with no rows is not written).

Caffe's rules, kept as they are:

- parsing starts after the first line containing ``Solving`` (its time is second
  0) and only once an ``Iteration N`` line has been seen;
- a line's time comes from its glog prefix (month, day, time); the year is the
  log file's creation year, plus one each time the month goes backwards;
  lines whose prefix does not parse are skipped;
- ``lr = X`` sets the learning rate of the rows that follow (the first row takes
  the second row's rate, as Caffe's ``fix_initial_nan_learning_rate``);
- ``Train net output #i: name = value`` and ``Test net output #i: ...`` fill a row
  for the current iteration; a row is complete when it has as many columns as the
  first row; the first row is stored when the next iteration's outputs begin, and
  an unfinished last row is dropped.

Differences, on purpose: a log without a ``Solving`` line is an error naming the
file (Caffe's script silently writes nothing; a ``Solving`` line without a glog
prefix crashes it); blank or short lines are skipped
(Caffe's crashes on them); a glog prefix with the year (``I20240210 ...``, glog
0.7's default) is read with that year (Caffe's skips those lines).
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import re
import sys
from collections import OrderedDict
from pathlib import Path

from ..errors import DataError
from ..formats.atomic import atomic_write_bytes
from .flags import Parser

_ITERATION = re.compile(r"Iteration (\d+)")
_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def line_datetime(line: str, year: int) -> datetime.datetime:
    """The time in a glog prefix ``<L>MMDD HH:MM:SS.micro`` (or ``<L>YYYYMMDD ...``).

    Raises ValueError when the line has no such prefix (Caffe's
    ``extract_datetime_from_line``, which takes the year from the caller).
    """
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError("no glog prefix")
    date = parts[0][1:]
    if len(date) == 8 and date.isdigit():  # glog >= 0.7 writes the year too
        year, date = int(date[:4]), date[4:]
    month, day = int(date[0:2]), int(date[2:])
    stamp = parts[1]
    dot = stamp.rfind(".")
    hour, minute, second = (int(x) for x in stamp[:dot].split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(stamp[dot + 1:]))


def _net_output(regex, row, rows, line, iteration, seconds, learning_rate):
    """Caffe's ``parse_line_for_net_output``: start, extend or complete a row."""
    m = regex.search(line)
    if m:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds), ("LearningRate", learning_rate)])
        row[m.group(2)] = float(m.group(3))
    if row and len(rows) >= 1 and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return rows, row


def parse_log(path) -> tuple[list[OrderedDict], list[OrderedDict]]:
    """``(train_rows, test_rows)`` of the log at ``path``: Caffe's ``parse_log``."""
    path = Path(path)
    try:
        year = datetime.datetime.fromtimestamp(os.path.getctime(path)).year
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: no such log file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the log ({e.strerror})") from None
    train_rows: list = []
    test_rows: list = []
    train_row = test_row = None
    iteration = -1.0
    learning_rate = float("nan")
    with f:
        start = None
        for line in f:
            if "Solving" in line:
                try:
                    start = line_datetime(line, year)
                except ValueError:
                    raise DataError(f"{path}: the 'Solving' line has no glog time prefix: {line.strip()!r}") from None
                break
        if start is None:
            raise DataError(f"{path}: no 'Solving' line; is this a Caffe training log (glog lines on stderr)?")
        last = start
        for line in f:
            m = _ITERATION.search(line)
            if m:
                iteration = float(m.group(1))
            if iteration == -1:
                continue  # nothing counts before the first iteration
            try:
                when = line_datetime(line, year)
            except ValueError:
                continue  # not a glog line (e.g. a resumed solver's output)
            if when.month < last.month:  # the log ran into a new year
                year += 1
                when = line_datetime(line, year)
            last = when
            seconds = (when - start).total_seconds()
            lr = _LEARNING_RATE.search(line)
            if lr:
                learning_rate = float(lr.group(1))
            train_rows, train_row = _net_output(_TRAIN_OUTPUT, train_row, train_rows, line, iteration, seconds,
                                                learning_rate)
            test_rows, test_row = _net_output(_TEST_OUTPUT, test_row, test_rows, line, iteration, seconds,
                                              learning_rate)
    for rows in (train_rows, test_rows):
        if len(rows) > 1:  # Caffe's fix_initial_nan_learning_rate
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train_rows, test_rows


def csv_bytes(rows, delimiter: str = ",") -> bytes:
    """The table as Caffe's ``write_csv`` writes it (header from the first row)."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), dialect=csv.excel, delimiter=delimiter)
    writer.writeheader()
    try:
        writer.writerows(rows)
    except ValueError as e:  # a later row has an output the first row lacks
        raise DataError(f"cannot write the table: {e} (the first row's columns are {list(rows[0])})") from None
    return buf.getvalue().encode("utf-8")


def save_csv_files(log_path, output_dir, train_rows, test_rows, delimiter=",", verbose=False) -> list[Path]:
    """Write ``<output_dir>/<log name>.train`` and ``.test`` (atomically); returns the paths written."""
    out = Path(output_dir)
    if not out.is_dir():
        raise DataError(f"{out}: output directory does not exist")
    written = []
    for suffix, rows in ((".train", train_rows), (".test", test_rows)):
        target = out / (Path(log_path).name + suffix)
        if not rows:
            if verbose:
                print(f"Not writing {target}; no lines to write")
            continue
        atomic_write_bytes(target, csv_bytes(rows, delimiter))
        written.append(target)
        if verbose:
            print(f"Wrote {target}")
    return written


def parse_log_command(argv) -> int:
    p = Parser(prog="pipeline parse_log",
               description="Parse a Caffe training log into two CSV files containing training and testing "
                           "information (Caffe's tools/extra/parse_log.py).")
    p.add_argument("logfile_path", help="Path to log file")
    p.add_argument("output_dir", help="Directory in which to place output CSV files")
    p.add_argument("--verbose", action="store_true", help="Print some extra info (e.g., output filenames)")
    p.add_argument("--delimiter", default=",", help="Column delimiter in output files (default: ',')")
    a = p.parse_args(argv)
    if len(a.delimiter) != 1:
        raise DataError(f"--delimiter {a.delimiter!r}: must be one character")
    train_rows, test_rows = parse_log(a.logfile_path)
    save_csv_files(a.logfile_path, a.output_dir, train_rows, test_rows, a.delimiter, a.verbose)
    if not train_rows and not test_rows:
        print(f"pipeline parse_log: note: {a.logfile_path} has no complete train or test rows; nothing written",
              file=sys.stderr)
    return 0
