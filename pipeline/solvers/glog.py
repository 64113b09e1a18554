"""Caffe's log lines: glog's prefix on Python ``logging`` records.

Library code logs through ``logging.getLogger("pipeline....")`` and never prints;
a command (or a user) calls :func:`install` to send those records to stderr in
glog's layout, so Caffe's ``tools/extra/parse_log.py`` and ``extract_seconds.py``
read our training logs::

    I1126 22:10:05.123456 12345 solver.py:218] Iteration 100, lr = 0.00992565

``<level><MMDD> <HH:MM:SS.micro> <thread id, width 5> <file>:<line>] <message>``.
Numbers in messages use C++'s default stream format (``%g``, 6 significant
digits): :func:`num` formats them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

LOGGER = "pipeline"


def num(x) -> str:
    """A number as C++'s ``ostream << float`` writes it (``%g``)."""
    return "%g" % float(x)


class GlogFormatter(logging.Formatter):
    """Formats a record as one glog line (continuation lines are left as written)."""

    _LEVELS = {"DEBUG": "I", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}

    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        lt = time.localtime(t)
        micros = int(round((t - int(t)) * 1e6)) % 1000000
        level = self._LEVELS.get(record.levelname, "I")
        tid = threading.get_native_id()
        prefix = (
            f"{level}{lt.tm_mon:02d}{lt.tm_mday:02d} {lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d}."
            f"{micros:06d} {tid:5d} {record.filename}:{record.lineno}] "
        )
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return prefix + msg


def install(stream=None, level: int = logging.INFO, name: str = LOGGER) -> logging.Handler:
    """Send the package's log records to ``stream`` (default stderr) as glog lines.

    Returns the handler (pass it to :func:`remove` when done).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(GlogFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


def remove(handler: logging.Handler, name: str = LOGGER) -> None:
    """Undo :func:`install`."""
    logger = logging.getLogger(name)
    logger.removeHandler(handler)
    handler.flush()
    if not logger.handlers:
        logger.propagate = True
