"""Recurrent layers: RNN, LSTM and the single-step LSTMUnit.

Caffe builds an unrolled net for RNN and LSTM. Here the same math runs as a plain
loop over time in torch, and autograd provides back-propagation through time.

Shared conventions (``RecurrentLayer``):

- ``x`` is time-major, ``(T, N, ...)``: T timesteps of N independent streams. Axes
  after the second are flattened, so ``input_dim = prod(x.shape[2:])``.
- ``cont`` is ``(T, N)``: ``cont[t, n] = 0`` marks the start of a new sequence in
  stream n, so the carried state is multiplied by 0 at that step. It gets no
  gradient.
- An optional static input ``x_static`` is ``(N, ...)``; its projection is added
  at every timestep. ``static_dim = prod(x_static.shape[1:])``.
- With ``expose_hidden: false`` the state at the end of a forward pass (h_T, and
  c_T for LSTM) is kept, detached, and used as h_0 (c_0) by the next forward pass,
  as Caffe copies its recurrent outputs into its recurrent inputs. It starts at
  zero; ``reset()`` zeroes it again. Gradients never cross forward passes.
- With ``expose_hidden: true``, h_0 (and c_0) are extra bottoms after ``x_static``
  and h_T (and c_T) are extra tops after the output, each ``(1, N, num_output)``.
  Caffe shares only the data of these blobs with its unrolled net, so in Caffe no
  gradient reaches h_0/c_0 and a gradient on h_T/c_T is dropped. Here gradients
  flow through them by default; ``hidden_backward=False`` restores Caffe's cut.
- LSTM's forget-gate gradient is the exact one, ``cont * sigmoid'(f')``; Caffe's
  LSTMUnit backward uses ``f * (1 - f)`` with ``f = cont * sigmoid(f')``, which is
  the same for the binary ``cont`` Caffe documents and differs for fractional cont.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..fillers import Filler, fill, filler_or_default
from ..registry import LAYERS
from .base import TRAIN, Layer, count


def _lstm_unit(c_prev, gates, cont):
    """One LSTM step. gates (..., 4D) in the order i, f, o, g; cont broadcasts to c_prev."""
    i, f, o, g = gates.chunk(4, dim=-1)
    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
    c = cont * f * c_prev + i * g
    return c, o * torch.tanh(c)


class _RecurrentLayer(Layer):
    """Base of RNN and LSTM: parameters, shape rules and the carried state.

    Subclasses set ``hidden_names`` (the recurrent state blobs, in Caffe's
    bottom/top order) and implement ``_make_blobs`` and ``_unroll``.
    """

    type = "Recurrent"
    hidden_names: tuple = ("h",)
    # Arity without expose_hidden; __init__ widens it per instance.
    min_bottoms = 2
    max_bottoms = 3
    exact_tops = 1

    def __init__(
        self,
        num_output: int = 0,
        weight_filler=None,
        bias_filler=None,
        expose_hidden: bool = False,
        debug_info: bool = False,
        hidden_backward: bool = True,
        name: str = "",
        phase: int = TRAIN,
    ):
        super().__init__(name=name, phase=phase)
        self.num_output = int(num_output)
        self.weight_filler = Filler.coerce(weight_filler)
        self.bias_filler = Filler.coerce(bias_filler)
        self.expose_hidden = bool(expose_hidden)
        self.debug_info = bool(debug_info)  # accepted for compatibility; no effect
        self.hidden_backward = bool(hidden_backward)
        n_hidden = len(self.hidden_names) if self.expose_hidden else 0
        self.min_bottoms = 2 + n_hidden
        self.max_bottoms = 3 + n_hidden
        self.exact_tops = 1 + n_hidden
        self.T = None
        self.input_dim = None
        self.static_dim = None
        self.static_input = False
        self._carry = None  # detached state kept between forward passes

    @classmethod
    def from_param(cls, param, phase: int = TRAIN):
        rp = param.recurrent_param
        return cls(
            num_output=rp.num_output,
            weight_filler=filler_or_default(rp, "weight_filler"),
            bias_filler=filler_or_default(rp, "bias_filler"),
            expose_hidden=rp.expose_hidden,
            debug_info=rp.debug_info,
            name=param.name,
            phase=phase,
        )

    # -- shapes ---------------------------------------------------------------
    def _has_static(self, n_bottoms: int) -> bool:
        n_hidden = len(self.hidden_names) if self.expose_hidden else 0
        return n_bottoms > 2 + n_hidden

    def _check_common(self, shapes) -> None:
        """Caffe's RecurrentLayer shape rules that need no learnable blob."""
        if self.num_output <= 0:
            self.fail(
                f"recurrent_param.num_output={self.num_output}: num_output must be positive",
                ConfigError,
            )
        x, c = tuple(shapes[0]), tuple(shapes[1])
        if len(x) < 2:
            self.fail(f"bottom[0] must have at least 2 axes (#timesteps, #streams, ...), got {x}")
        if len(c) != 2:
            self.fail(f"bottom[1] (cont) must have exactly 2 axes (#timesteps, #streams), got {c}")
        if c != x[:2]:
            self.fail(f"bottom[1] (cont) shape {c} must equal bottom[0]'s first two axes {x[:2]}")
        if self._has_static(len(shapes)):
            s = tuple(shapes[2])
            if len(s) < 1:
                self.fail("bottom[2] (static input) must have at least 1 axis (#streams, ...)")
            if s[0] != x[1]:
                self.fail(
                    f"bottom[2] (static input) has {s[0]} streams in axis 0, "
                    f"bottom[0] has {x[1]}"
                )

    def setup(self, bottom_shapes):
        self._check_common(bottom_shapes)
        x = tuple(bottom_shapes[0])
        self.T = x[0]
        self.input_dim = count(x, 2)
        self.static_input = self._has_static(len(bottom_shapes))
        self.static_dim = count(bottom_shapes[2], 1) if self.static_input else None
        self._make_blobs()

    def reshape(self, bottom_shapes):
        self._check_common(bottom_shapes)
        x = tuple(bottom_shapes[0])
        if x[0] != self.T:
            self.fail(f"input number of timesteps changed: set up with T={self.T}, got {x[0]}")
        if count(x, 2) != self.input_dim:
            self.fail(
                f"bottom[0] has {count(x, 2)} features per timestep (axes 2+ of {x}), "
                f"the weights expect {self.input_dim}"
            )
        if self._has_static(len(bottom_shapes)) != self.static_input:
            self.fail("the static input bottom[2] cannot be added or removed after setup")
        if self.static_input and count(bottom_shapes[2], 1) != self.static_dim:
            self.fail(
                f"bottom[2] (static input) has {count(bottom_shapes[2], 1)} features per "
                f"stream, the weights expect {self.static_dim}"
            )
        state = (1, x[1], self.num_output)
        if self.expose_hidden:
            first = 2 + self.static_input
            for j, name in enumerate(self.hidden_names):
                got = tuple(bottom_shapes[first + j])
                if got != state:
                    self.fail(
                        f"bottom[{first + j}] ({name}_0) shape {got} must match the hidden "
                        f"state shape {state}"
                    )
        out = [(self.T, x[1], self.num_output)]
        if self.expose_hidden:
            out += [state] * len(self.hidden_names)
        return out

    # -- blobs ----------------------------------------------------------------
    def _weight(self, rows: int, cols: int):
        return self.add_blob(fill(self.weight_filler, (rows, cols)))

    def _bias(self, rows: int):
        return self.add_blob(fill(self.bias_filler, (rows,)))

    def _make_blobs(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _unroll(self, xw, cont, state):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- forward --------------------------------------------------------------
    def reset(self) -> None:
        """Zero the carried hidden state (Caffe's ``RecurrentLayer::Reset``)."""
        self._carry = None

    def _input_projection(self, x, static):
        """W_x * x_t + b (+ W_static * x_static) for every t: (T, N, rows of W_x)."""
        w_x, b = self.blobs[0], self.blobs[1]
        T, N = x.shape[0], x.shape[1]
        xw = x.reshape(T, N, -1) @ w_x.t() + b
        if static is not None:
            xw = xw + (static.reshape(N, -1) @ self.blobs[2].t()).unsqueeze(0)
        return xw

    def _initial_state(self, hidden, N, like):
        if self.expose_hidden:
            return [h if self.hidden_backward else h.detach() for h in hidden]
        shape = (1, N, self.num_output)
        carry = self._carry
        if carry is None or any(tuple(c.shape) != shape for c in carry):
            return [like.new_zeros(shape) for _ in self.hidden_names]
        return [c.to(device=like.device, dtype=like.dtype) for c in carry]

    def forward(self, x, cont, *rest):
        static = rest[0] if self._has_static(2 + len(rest)) else None
        hidden = rest[1:] if static is not None else rest
        xw = self._input_projection(x, static)
        cont = cont.detach().to(dtype=xw.dtype)
        state = self._initial_state(hidden, x.shape[1], xw)
        out, final = self._unroll(xw, cont, state)
        if not self.expose_hidden:
            self._carry = tuple(s.detach() for s in final)
            return out
        if not self.hidden_backward:
            final = [s.detach() for s in final]
        return (out, *final)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_output={self.num_output}, "
            f"expose_hidden={self.expose_hidden}"
        )


@LAYERS.register()
class RNN(_RecurrentLayer):
    """Vanilla recurrent layer (Caffe's ``RNNLayer``).

    Caffe's formula, for t = 1..T (``cont_t`` resets the state)::

        h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])
        o_t = tanh(W_ho h_t + b_o)

    The top is o for every timestep.

    Args:
        num_output (int): hidden and output size H; must be positive. Default 0.
        weight_filler, bias_filler: fillers for every weight / bias (default: constant 0).
        expose_hidden (bool): take h_0 as a bottom and give h_T as a top. Default False.
        debug_info (bool): accepted, no effect. Default False.
        hidden_backward (bool): back-propagate into h_0 and from the h_T top (Caffe
            does not; see the module docstring). Default True.

    Learnable blobs, Caffe's order: W_xh (H, input_dim), b_h (H,),
    [W_xh_static (H, static_dim)], W_hh (H, H), W_ho (H, H), b_o (H,).

    Shape:
        bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0 (1, N, H)]
        tops: o (T, N, H), [h_T (1, N, H)]
    """

    type = "RNN"
    hidden_names = ("h",)

    def _make_blobs(self):
        H = self.num_output
        self._weight(H, self.input_dim)  # W_xh
        self._bias(H)  # b_h
        if self.static_input:
            self._weight(H, self.static_dim)  # W_xh_static
        self._weight(H, H)  # W_hh
        self._weight(H, H)  # W_ho
        self._bias(H)  # b_o

    def _unroll(self, xw, cont, state):
        k = 3 if self.static_input else 2
        w_hh, w_ho, b_o = self.blobs[k], self.blobs[k + 1], self.blobs[k + 2]
        h = state[0][0]  # (N, H)
        hs = []
        for t in range(xw.shape[0]):
            h = torch.tanh((cont[t].unsqueeze(-1) * h) @ w_hh.t() + xw[t])
            hs.append(h)
        h_all = torch.stack(hs)  # (T, N, H)
        o = torch.tanh(h_all @ w_ho.t() + b_o)
        return o, [h.unsqueeze(0)]


@LAYERS.register()
class LSTM(_RecurrentLayer):
    """Long short-term memory layer (Caffe's ``LSTMLayer``), without peepholes.

    Caffe's formula, for t = 1..T (gate order i, f, o, g as in LSTMUnit)::

        [i', f', o', g'] = W_hc (cont_t * h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]
        i, f, o = sigmoid(i', f', o');  g = tanh(g')
        c_t = cont_t * f * c_{t-1} + i * g
        h_t = o * tanh(c_t)

    The top is h for every timestep.

    Args:
        num_output (int): hidden size H; must be positive. Default 0.
        weight_filler, bias_filler: fillers for every weight / bias (default: constant 0).
        expose_hidden (bool): take h_0, c_0 as bottoms and give h_T, c_T as tops.
            Default False.
        debug_info (bool): accepted, no effect. Default False.
        hidden_backward (bool): back-propagate into h_0/c_0 and from the h_T/c_T tops
            (Caffe does not; see the module docstring). Default True.

    Learnable blobs, Caffe's order: W_xc (4H, input_dim), b_c (4H,),
    [W_xc_static (4H, static_dim)], W_hc (4H, H).

    Shape:
        bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0 (1, N, H), c_0 (1, N, H)]
        tops: h (T, N, H), [h_T (1, N, H), c_T (1, N, H)]
    """

    type = "LSTM"
    hidden_names = ("h", "c")

    def _make_blobs(self):
        H4 = 4 * self.num_output
        self._weight(H4, self.input_dim)  # W_xc
        self._bias(H4)  # b_c
        if self.static_input:
            self._weight(H4, self.static_dim)  # W_xc_static
        self._weight(H4, self.num_output)  # W_hc

    def _unroll(self, xw, cont, state):
        w_hc = self.blobs[3 if self.static_input else 2]
        h, c = state[0][0], state[1][0]  # (N, H) each
        hs = []
        for t in range(xw.shape[0]):
            ct = cont[t].unsqueeze(-1)  # (N, 1)
            gates = (ct * h) @ w_hc.t() + xw[t]
            c, h = _lstm_unit(c, gates, ct)
            hs.append(h)
        return torch.stack(hs), [h.unsqueeze(0), c.unsqueeze(0)]


@LAYERS.register()
class LSTMUnit(Layer):
    """One LSTM step on precomputed gate inputs (Caffe's ``LSTMUnitLayer``).

    Caffe's formula (gate order i, f, o, g along the last axis of X)::

        i, f, o = sigmoid(X_i, X_f, X_o);  g = tanh(X_g)
        c_t = cont_t * f * c_{t-1} + i * g
        h_t = o * tanh(c_t)

    No parameters; gradients reach c_prev and X, never cont.

    Shape:
        bottoms: c_prev (1, N, D), X (1, N, 4D), cont (1, N)
        tops: c (1, N, D), h (1, N, D)
    """

    type = "LSTMUnit"
    exact_bottoms = 3
    exact_tops = 2

    def reshape(self, bottom_shapes):
        c, x, cont = (tuple(s) for s in bottom_shapes)
        for i, (s, axes) in enumerate(((c, 3), (x, 3), (cont, 2))):
            if len(s) != axes:
                self.fail(f"bottom[{i}] must have {axes} axes, got shape {s}")
            if s[0] != 1:
                self.fail(f"bottom[{i}] must hold a single timestep (axis 0 = 1), got shape {s}")
            if s[1] != c[1]:
                self.fail(f"bottom[{i}] has {s[1]} streams in axis 1, bottom[0] has {c[1]}")
        if x[2] != 4 * c[2]:
            self.fail(
                f"bottom[1] (gate inputs) axis 2 must be 4 * {c[2]} = {4 * c[2]}, got {x[2]}"
            )
        return [c, c]

    def forward(self, c_prev, x, cont):
        cont = cont.detach().to(dtype=x.dtype).unsqueeze(-1)  # (1, N, 1)
        return _lstm_unit(c_prev, x, cont)
