"""Typed exceptions raised by the pipeline package.

Library code never prints or exits: it raises one of these, with enough context
(file, line, column, layer, blob) for the message alone to say what is wrong and
where. Only the command layer (``pipeline/commands``) turns them into one-line
messages and exit codes.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the package raises on bad input or bad state."""

    def prefixed(self, context: str) -> "PipelineError":
        """A copy of this error (same type and attributes) whose message starts with ``context``."""
        if str(self).startswith(context):
            return self
        new = Exception.__new__(type(self))  # no __init__: subclasses take other arguments
        new.__dict__.update(self.__dict__)
        new.args = (f"{context}: {self}",)
        return new


class ConfigError(PipelineError):
    """A net, solver or layer definition is invalid (bad value, bad combination)."""


class ParseError(ConfigError):
    """A text or binary file could not be read as the message it should hold.

    Attributes:
        path: the file (or ``"<string>"``).
        line, column: 1-based position for text files; None for binary files.
        detail: what was found and what was expected.
    """

    def __init__(self, path, detail, line=None, column=None):
        self.path = str(path)
        self.line = line
        self.column = column
        self.detail = detail
        where = self.path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {detail}")


class UpgradeError(ConfigError):
    """A legacy definition cannot be upgraded to today's format."""


class UnknownTypeError(ConfigError):
    """A registry lookup missed (unknown layer type, solver, filler, lr policy)."""


class GraphError(ConfigError):
    """The layers do not connect (unknown bottom blob, duplicate top, ...)."""


class ShapeError(PipelineError):
    """Blob or parameter shapes do not agree."""


class DataError(PipelineError):
    """A database, image, list file or record is missing or malformed."""


class NotImplementedYet(PipelineError):
    """A command or feature whose issue has not landed yet."""


class NumericError(PipelineError):
    """Training produced a NaN or infinite value (loss, a layer's output or a parameter).

    Attributes:
        iteration: the solver iteration at which it was seen.
        layer, top: the first layer (in net order) whose output is non-finite, and
            that output's blob name (None when every output is finite, e.g. only
            the parameters went bad).
        snapshot: the newest snapshot written before it (None if there is none).
    """

    def __init__(self, message, iteration=None, layer=None, top=None, snapshot=None):
        super().__init__(message)
        self.iteration = iteration
        self.layer = layer
        self.top = top
        self.snapshot = snapshot


class WriteError(PipelineError):
    """An output file could not be written (disk full, permission denied, ...).

    Writes are atomic, so the message also says what was kept intact (e.g. the
    previous snapshot).
    """
