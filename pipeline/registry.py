"""One small registry class, one instance per kind of pluggable thing.

Keys are Caffe's own strings (``"ReLU"``, ``"xavier"``, ``"multistep"``, ``"SGD"``),
so a prototxt value is looked up as written. Registries are filled by explicit
imports (``pipeline/layers/__init__.py`` imports every family), never by
scanning, so ``import pipeline`` always yields the full set.
"""

from __future__ import annotations

import difflib

from .errors import UnknownTypeError


class Registry:
    """A name -> object table with helpful misses.

    >>> LAYERS = Registry("layer type")
    >>> @LAYERS.register("ReLU")
    ... class ReLU: ...
    >>> LAYERS.get("ReLU") is ReLU
    True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._table: dict[str, object] = {}

    def register(self, name: str | None = None):
        """Decorator: register under ``name`` (default: the object's ``type`` or ``__name__``)."""

        def deco(obj):
            key = name or getattr(obj, "type", None) or obj.__name__
            if key in self._table:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._table[key] = obj
            return obj

        return deco

    def get(self, name: str, where: str = ""):
        """Return the object registered as ``name``; a miss lists the known names."""
        try:
            return self._table[name]
        except KeyError:
            lower = {k.lower(): k for k in self._table}
            close = difflib.get_close_matches(str(name).lower(), lower, n=1)
            hint = f" (did you mean {lower[close[0]]!r}?)" if close else ""
            ctx = f" ({where})" if where else ""
            known = ", ".join(sorted(self._table))
            raise UnknownTypeError(
                f"unknown {self.kind} {name!r}{ctx}{hint}; known: {known}"
            ) from None

    def __contains__(self, name) -> bool:
        return name in self._table

    def __iter__(self):
        return iter(sorted(self._table))

    def __len__(self) -> int:
        return len(self._table)

    def items(self):
        return sorted(self._table.items())


LAYERS = Registry("layer type")
FILLERS = Registry("filler type")
SOLVERS = Registry("solver type")
LR_POLICIES = Registry("lr policy")
