"""Layers whose tops come from outside the net: Input and DummyData (data_sources.py has the rest).

A source layer has no bottoms: its ``forward()`` returns its tops (on the CPU; the
net moves them to its device). For ``Input`` (``is_input = True``) the tops are the
net's input blobs, which the user fills (``net.blobs['data'].data[...] = x``).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..fillers import Filler, fill
from ..registry import LAYERS
from .base import TRAIN, Layer


@LAYERS.register()
class Input(Layer):
    """The net's inputs: one top per input blob, each of a given shape.

    Args:
        shapes: one shape per top, or a single shape shared by all tops.

    Shape: no bottoms; top i has ``shapes[i]`` (or ``shapes[0]``).
    """

    type = "Input"
    exact_bottoms = 0
    min_tops = 1
    is_input = True

    def __init__(self, shapes=(), name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.shapes = [tuple(int(d) for d in s) for s in shapes]

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls([list(s.dim) for s in param.input_param.shape], name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        n = len(self.shapes)
        if n not in (1, self.num_tops):
            raise ConfigError(
                f"Input layer '{self.name}': input_param needs one shape or one per top "
                f"({self.num_tops}), got {n}"
            )
        if n == 0:
            raise ConfigError(f"Input layer '{self.name}': input_param has no shape")
        return [self.shapes[0] if n == 1 else self.shapes[i] for i in range(self.num_tops)]

    def forward(self):  # pragma: no cover - the net feeds input blobs itself
        raise RuntimeError("Input layers are fed by the net")


@LAYERS.register()
class DummyData(Layer):
    """Tops filled by fillers: constant fillers once, random fillers on every forward.

    Args:
        shapes: one shape per top, or one for all.
        fillers: one Filler per top, or one for all (default constant 0).

    Shape: no bottoms; top i has ``shapes[i]``.
    """

    type = "DummyData"
    exact_bottoms = 0
    min_tops = 1

    def __init__(self, shapes=(), fillers=(), name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.fillers = [Filler.coerce(f) for f in fillers] or [Filler()]
        self._fixed: dict[int, torch.Tensor] = {}

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        dp = param.dummy_data_param
        shapes = [list(s.dim) for s in dp.shape]
        legacy = (dp.num, dp.channels, dp.height, dp.width)
        if any(len(v) for v in legacy):
            if shapes:
                raise ConfigError(f"DummyData layer '{param.name}': give shape or num/channels/height/width, not both")
            n = max(len(v) for v in legacy)
            for v, field in zip(legacy, ("num", "channels", "height", "width")):
                if len(v) not in (1, n):
                    raise ConfigError(f"DummyData layer '{param.name}': {field} must be given once or {n} times")
            shapes = [[v[i if len(v) > 1 else 0] for v in legacy] for i in range(n)]
        return cls(shapes, [Filler.from_param(f) for f in dp.data_filler], name=param.name, phase=phase)

    def _pick(self, seq, i, what):
        if len(seq) not in (1, self.num_tops):
            raise ConfigError(
                f"DummyData layer '{self.name}': {what} must be given once or once per top ({self.num_tops}), "
                f"got {len(seq)}"
            )
        return seq[0] if len(seq) == 1 else seq[i]

    def reshape(self, bottom_shapes):
        if not self.shapes:
            raise ConfigError(f"DummyData layer '{self.name}': dummy_data_param needs a shape")
        for i in range(self.num_tops):
            self._pick(self.fillers, i, "data_filler")
        return [self._pick(self.shapes, i, "shape") for i in range(self.num_tops)]

    def forward(self):
        outs = []
        for i, shape in enumerate(self.reshape([])):
            f = self._pick(self.fillers, i, "data_filler")
            if f.type == "constant":
                t = self._fixed.get(i)
                if t is None or tuple(t.shape) != shape:
                    t = self._fixed[i] = fill(f, shape)
            else:
                t = fill(f, shape)
            outs.append(t)
        return outs[0] if len(outs) == 1 else tuple(outs)
