"""Tests for pipeline/layers/recurrent.py: RNN, LSTM and LSTMUnit.

The references below are float64 numpy loops over time and stream, written from
Caffe's formulas (rnn_layer.cpp, lstm_layer.cpp, lstm_unit_layer.cpp), not from the
layer code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradient_check import check_gradient
from layer_harness import make_layer, rand, run
from pipeline.errors import ConfigError, ShapeError

T, N, IN, H = 3, 2, 3, 2

# Stream 1 starts a new sequence at t=1; both start at t=0.
CONT_RESET = [[0, 0], [1, 0], [1, 1]]
# With exposed hidden state, t=0 continues from h_0/c_0; stream 0 restarts at t=1.
CONT_EXPOSE = [[1, 1], [0, 1], [1, 1]]

FILLERS = (
    'weight_filler { type: "uniform" min: -0.8 max: 0.8 } '
    'bias_filler { type: "uniform" min: -0.5 max: 0.5 }'
)


def snippet(kind, expose=False, num_output=H, name="rec", extra=FILLERS):
    return (
        f'name: "{name}" type: "{kind}" recurrent_param {{ num_output: {num_output} '
        f'expose_hidden: {"true" if expose else "false"} {extra} }}'
    )


def n_hidden(kind):
    return 2 if kind == "LSTM" else 1


# -- numpy references (float64) ----------------------------------------------
def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_rnn(x, cont, blobs, static=None, h0=None):
    steps, streams = x.shape[:2]
    X = x.reshape(steps, streams, -1)
    W_xh, b_h = blobs[0], blobs[1]
    rest = blobs[3:] if static is not None else blobs[2:]
    W_hh, W_ho, b_o = rest
    hid = W_hh.shape[0]
    h = np.zeros((streams, hid)) if h0 is None else h0[0].copy()
    out = np.zeros((steps, streams, hid))
    for t in range(steps):
        new_h = np.zeros_like(h)
        for n in range(streams):
            pre = W_hh @ (cont[t, n] * h[n]) + W_xh @ X[t, n] + b_h
            if static is not None:
                pre = pre + blobs[2] @ static[n].ravel()
            new_h[n] = np.tanh(pre)
            out[t, n] = np.tanh(W_ho @ new_h[n] + b_o)
        h = new_h
    return [out, h[None]]


def np_lstm(x, cont, blobs, static=None, h0=None, c0=None):
    steps, streams = x.shape[:2]
    X = x.reshape(steps, streams, -1)
    W_xc, b_c = blobs[0], blobs[1]
    W_hc = blobs[3] if static is not None else blobs[2]
    hid = W_hc.shape[1]
    h = np.zeros((streams, hid)) if h0 is None else h0[0].copy()
    c = np.zeros((streams, hid)) if c0 is None else c0[0].copy()
    out = np.zeros((steps, streams, hid))
    for t in range(steps):
        new_h, new_c = np.zeros_like(h), np.zeros_like(c)
        for n in range(streams):
            pre = W_hc @ (cont[t, n] * h[n]) + W_xc @ X[t, n] + b_c
            if static is not None:
                pre = pre + blobs[2] @ static[n].ravel()
            i = sigmoid(pre[0:hid])
            f = sigmoid(pre[hid : 2 * hid])
            o = sigmoid(pre[2 * hid : 3 * hid])
            g = np.tanh(pre[3 * hid : 4 * hid])
            new_c[n] = cont[t, n] * f * c[n] + i * g
            new_h[n] = o * np.tanh(new_c[n])
            out[t, n] = new_h[n]
        h, c = new_h, new_c
    return [out, h[None], c[None]]


def np_lstm_unit(c_prev, x, cont):
    _, streams, dim = c_prev.shape
    c = np.zeros_like(c_prev)
    h = np.zeros_like(c_prev)
    for n in range(streams):
        for d in range(dim):
            i = sigmoid(x[0, n, d])
            f = sigmoid(x[0, n, dim + d])
            o = sigmoid(x[0, n, 2 * dim + d])
            g = np.tanh(x[0, n, 3 * dim + d])
            c[0, n, d] = cont[0, n] * f * c_prev[0, n, d] + i * g
            h[0, n, d] = o * np.tanh(c[0, n, d])
    return [c, h]


# -- the case table ----------------------------------------------------------
# id: (kind, expose, x shape, static shape or None, cont, expected blob shapes)
CASES = {
    "rnn": ("RNN", False, (T, N, IN), None, CONT_RESET,
            [(H, IN), (H,), (H, H), (H, H), (H,)]),
    "rnn_static": ("RNN", False, (T, N, IN), (N, 4), CONT_RESET,
                   [(H, IN), (H,), (H, 4), (H, H), (H, H), (H,)]),
    "rnn_feature_axes": ("RNN", False, (T, N, 1, IN), None, CONT_RESET,
                         [(H, IN), (H,), (H, H), (H, H), (H,)]),
    "rnn_expose": ("RNN", True, (T, N, IN), None, CONT_EXPOSE,
                   [(H, IN), (H,), (H, H), (H, H), (H,)]),
    "rnn_expose_static": ("RNN", True, (T, N, IN), (N, 2, 2), CONT_EXPOSE,
                          [(H, IN), (H,), (H, 4), (H, H), (H, H), (H,)]),
    "lstm": ("LSTM", False, (T, N, IN), None, CONT_RESET,
             [(4 * H, IN), (4 * H,), (4 * H, H)]),
    "lstm_static": ("LSTM", False, (T, N, IN), (N, 4), CONT_RESET,
                    [(4 * H, IN), (4 * H,), (4 * H, 4), (4 * H, H)]),
    "lstm_feature_axes": ("LSTM", False, (T, N, IN, 1), None, CONT_RESET,
                          [(4 * H, IN), (4 * H,), (4 * H, H)]),
    "lstm_expose": ("LSTM", True, (T, N, IN), None, CONT_EXPOSE,
                    [(4 * H, IN), (4 * H,), (4 * H, H)]),
    "lstm_expose_static": ("LSTM", True, (T, N, IN), (N, 2, 2), CONT_EXPOSE,
                           [(4 * H, IN), (4 * H,), (4 * H, 4), (4 * H, H)]),
}


def build(case_id, seed=0):
    """(layer, top_shapes, bottoms as float64 tensors) for one case."""
    kind, expose, x_shape, s_shape, cont, _ = CASES[case_id]
    shapes = [x_shape, (T, N)]
    bottoms = [rand(*x_shape, seed=seed), torch.tensor(cont, dtype=torch.float64)]
    if s_shape is not None:
        shapes.append(s_shape)
        bottoms.append(rand(*s_shape, seed=seed + 1))
    if expose:
        for j in range(n_hidden(kind)):
            shapes.append((1, N, H))
            bottoms.append(rand(1, N, H, seed=seed + 2 + j))
    num_tops = 1 + (n_hidden(kind) if expose else 0)
    torch.manual_seed(seed)
    layer, tops = make_layer(snippet(kind, expose), shapes, num_tops=num_tops)
    return layer.double(), tops, bottoms


def reference(case_id, layer, bottoms):
    kind, expose, _, s_shape, _, _ = CASES[case_id]
    arrays = [b.numpy() for b in bottoms]
    blobs = [p.detach().numpy() for p in layer.blobs]
    x, cont = arrays[0], arrays[1]
    static = arrays[2] if s_shape is not None else None
    hidden = arrays[3:] if s_shape is not None else arrays[2:]
    if kind == "RNN":
        tops = np_rnn(x, cont, blobs, static, *hidden)
    else:
        tops = np_lstm(x, cont, blobs, static, *hidden)
    return tops if expose else tops[:1]


@pytest.mark.parametrize("case_id", CASES)
def test_top_and_blob_shapes(case_id):
    kind, expose, x_shape, _, _, blob_shapes = CASES[case_id]
    layer, tops, _ = build(case_id)
    expected = [(T, N, H)] + ([(1, N, H)] * n_hidden(kind) if expose else [])
    assert tops == expected
    assert [tuple(p.shape) for p in layer.blobs] == blob_shapes


@pytest.mark.parametrize("case_id", CASES)
def test_forward_matches_numpy(case_id):
    layer, tops, bottoms = build(case_id)
    out = run(layer, *bottoms)
    ref = reference(case_id, layer, bottoms)
    assert len(out) == len(ref) == len(tops)
    for got, want, shape in zip(out, ref, tops):
        assert tuple(got.shape) == shape
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case_id", CASES)
def test_gradient(case_id):
    layer, _, bottoms = build(case_id)
    checked = [i for i in range(len(bottoms)) if i != 1]  # never cont
    assert check_gradient(layer, bottoms, check_bottoms=checked) > 0


def test_reset_in_stream_cuts_the_gradient():
    # Stream 0 restarts at t=1, so its x at t=0 cannot reach its later outputs;
    # stream 1 continues, so its x at t=0 does.
    layer, _, bottoms = build("lstm")
    x = bottoms[0].clone().requires_grad_(True)
    cont = torch.tensor([[0, 0], [0, 1], [1, 1]], dtype=torch.float64)
    out = layer(x, cont)
    out[1:].sum().backward()
    assert torch.all(x.grad[0, 0] == 0)
    assert torch.any(x.grad[0, 1] != 0)


# -- parameters and fillers --------------------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_fillers_come_from_recurrent_param(kind):
    extra = (
        'weight_filler { type: "constant" value: 0.25 } '
        'bias_filler { type: "constant" value: -0.5 }'
    )
    layer, _ = make_layer(snippet(kind, extra=extra), [(T, N, IN), (T, N), (N, 5)])
    names = {"RNN": "W_xh b_h W_xh_static W_hh W_ho b_o", "LSTM": "W_xc b_c W_xc_static W_hc"}
    for name, p in zip(names[kind].split(), layer.blobs):
        want = -0.5 if name.startswith("b_") else 0.25
        assert torch.all(p == want), name
    plain, _ = make_layer(snippet(kind, extra=""), [(T, N, IN), (T, N)])
    assert all(torch.all(p == 0) for p in plain.blobs)  # Caffe's default: constant 0


def test_blobs_load_by_position():
    # Distinct values per blob, set in Caffe's order, must drive the matching terms.
    layer, _, bottoms = build("rnn_static")
    for k, p in enumerate(layer.blobs):
        with torch.no_grad():
            p.copy_(rand(*p.shape, seed=100 + k))
    out = layer(*bottoms)
    ref = reference("rnn_static", layer, bottoms)[0]
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)


# -- state carried between forward passes --------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carries_to_the_next_batch(kind):
    layer, _, bottoms = build(kind.lower())
    blobs = [p.detach().numpy() for p in layer.blobs]
    ref_fn = np_rnn if kind == "RNN" else np_lstm
    x1, cont1 = bottoms[0], bottoms[1]
    layer(x1, cont1)
    first = ref_fn(x1.numpy(), cont1.numpy(), blobs)
    x2 = rand(T, N, IN, seed=7)
    cont2 = torch.tensor([[1, 0], [1, 1], [1, 1]], dtype=torch.float64)
    got = layer(x2, cont2).detach().numpy()
    want = ref_fn(x2.numpy(), cont2.numpy(), blobs, None, *first[1:])[0]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    fresh = ref_fn(x2.numpy(), cont2.numpy(), blobs)[0]
    assert not np.allclose(got[:, 0], fresh[:, 0])  # stream 0 continued
    np.testing.assert_allclose(got[:, 1], fresh[:, 1], atol=1e-12)  # stream 1 restarted
    layer.reset()
    np.testing.assert_allclose(layer(x2, cont2).detach().numpy(), fresh, atol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_whole_sequence_equals_one_step_at_a_time(kind):
    # Caffe's TestForward: T steps at once == T forward passes of one step each.
    layer, _, bottoms = build(kind.lower())
    x = bottoms[0]
    cont = torch.tensor([[0, 0], [1, 1], [1, 1]], dtype=torch.float64)
    whole = layer(x, cont).detach()
    torch.manual_seed(0)
    step, _ = make_layer(snippet(kind), [(1, N, IN), (1, N)])
    step = step.double()
    with torch.no_grad():
        for p, q in zip(step.blobs, layer.blobs):
            p.copy_(q)
    for t in range(T):
        got = step(x[t : t + 1], cont[t : t + 1]).detach()
        torch.testing.assert_close(got[0], whole[t], rtol=1e-12, atol=1e-12)
    step.reset()
    zeros = torch.zeros(1, N, dtype=torch.float64)
    outs = [step(x[t : t + 1], zeros).detach() for t in range(T)]
    torch.testing.assert_close(outs[0][0], whole[0], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(outs[2][0], whole[2])


def test_carry_is_dropped_when_the_batch_size_changes():
    layer, _, bottoms = build("lstm")
    cont = torch.ones(T, N, dtype=torch.float64)
    layer(bottoms[0], cont)
    layer.reshape([(T, 3, IN), (T, 3)])
    x3 = rand(T, 3, IN, seed=9)
    ones3 = torch.ones(T, 3, dtype=torch.float64)
    blobs = [p.detach().numpy() for p in layer.blobs]
    want = np_lstm(x3.numpy(), ones3.numpy(), blobs)[0]
    np.testing.assert_allclose(layer(x3, ones3).detach().numpy(), want, atol=1e-12)


# -- gradient routing ----------------------------------------------------------
def test_no_gradient_to_cont_and_none_across_batches():
    layer, _, bottoms = build("lstm")
    cont = bottoms[1].clone().requires_grad_(True)
    x = bottoms[0].clone().requires_grad_(True)
    layer(x, cont).sum().backward()
    assert cont.grad is None
    x2 = bottoms[0].clone().requires_grad_(True)
    layer(x2, torch.ones(T, N, dtype=torch.float64)).sum().backward()  # reuses carried state
    assert x2.grad is not None


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_hidden_backward_false_reproduces_caffe_cut(kind):
    layer, _, bottoms = build(f"{kind.lower()}_expose")
    layer.hidden_backward = False
    hidden = [b.clone().requires_grad_(True) for b in bottoms[2:]]
    x = bottoms[0].clone().requires_grad_(True)
    out = layer(x, bottoms[1], *hidden)
    assert all(not t.requires_grad for t in out[1:])
    out[0].sum().backward()
    assert all(h.grad is None for h in hidden)
    assert x.grad is not None


# -- LSTMUnit -------------------------------------------------------------------
UNIT_SNIPPET = 'name: "unit" type: "LSTMUnit" top: "c" top: "h"'
UNIT_CASES = {
    "cont_mixed": [[1, 0, 1]],
    "cont_zero": [[0, 0, 0]],
}


def unit_bottoms(cont, dim=2):
    streams = len(cont[0])
    return [
        rand(1, streams, dim, seed=3),
        rand(1, streams, 4 * dim, seed=4, low=-2, high=2),
        torch.tensor(cont, dtype=torch.float64),
    ]


@pytest.mark.parametrize("case_id", UNIT_CASES)
def test_lstm_unit_forward_and_shapes(case_id):
    bottoms = unit_bottoms(UNIT_CASES[case_id])
    layer, tops = make_layer(UNIT_SNIPPET, [tuple(b.shape) for b in bottoms])
    assert tops == [(1, 3, 2), (1, 3, 2)]
    assert len(layer.blobs) == 0
    out = run(layer, *bottoms)
    ref = np_lstm_unit(*[b.numpy() for b in bottoms])
    for got, want in zip(out, ref):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case_id", UNIT_CASES)
def test_lstm_unit_gradient(case_id):
    bottoms = unit_bottoms(UNIT_CASES[case_id])
    layer, _ = make_layer(UNIT_SNIPPET, [tuple(b.shape) for b in bottoms])
    assert check_gradient(layer, bottoms, check_bottoms=[0, 1]) > 0


# -- errors ---------------------------------------------------------------------
# (snippet, bottom shapes, num_tops, error, message fragment)
ERROR_CASES = {
    "x_one_axis": (snippet("LSTM"), [(T,), (T, N)], 1, ShapeError, "at least 2 axes"),
    "cont_three_axes": (snippet("LSTM"), [(T, N, IN), (T, N, 1)], 1, ShapeError, "exactly 2 axes"),
    "cont_wrong_T": (snippet("RNN"), [(T, N, IN), (T + 1, N)], 1, ShapeError, "first two axes"),
    "cont_wrong_N": (snippet("RNN"), [(T, N, IN), (T, N + 1)], 1, ShapeError, "first two axes"),
    "static_wrong_N": (snippet("LSTM"), [(T, N, IN), (T, N), (N + 1, 4)], 1, ShapeError,
                       "streams"),
    "static_no_axes": (snippet("RNN"), [(T, N, IN), (T, N), ()], 1, ShapeError, "at least 1 axis"),
    "num_output_zero": (snippet("LSTM", num_output=0), [(T, N, IN), (T, N)], 1, ConfigError,
                        "num_output"),
    "h0_wrong_shape": (snippet("RNN", expose=True), [(T, N, IN), (T, N), (1, N, H + 1)], 2,
                       ShapeError, "h_0"),
    "c0_wrong_N": (snippet("LSTM", expose=True),
                   [(T, N, IN), (T, N), (1, N, H), (1, N + 1, H)], 3, ShapeError, "c_0"),
    "expose_missing_c0": (snippet("LSTM", expose=True), [(T, N, IN), (T, N), (1, N, H)], 3,
                          ConfigError, "at least 4 bottom"),
    "expose_missing_top": (snippet("LSTM", expose=True),
                           [(T, N, IN), (T, N), (1, N, H), (1, N, H)], 2, ConfigError,
                           "3 top"),
    "too_many_bottoms": (snippet("RNN"), [(T, N, IN), (T, N), (N, 2), (1, N, H)], 1,
                         ConfigError, "at most 3 bottom"),
    "unit_gates_not_4d": (UNIT_SNIPPET, [(1, N, 2), (1, N, 6), (1, N)], 2, ShapeError, "4 * 2"),
    "unit_two_steps": (UNIT_SNIPPET, [(2, N, 2), (2, N, 8), (2, N)], 2, ShapeError,
                       "single timestep"),
    "unit_cont_axes": (UNIT_SNIPPET, [(1, N, 2), (1, N, 8), (1, N, 1)], 2, ShapeError,
                       "2 axes"),
    "unit_streams": (UNIT_SNIPPET, [(1, N, 2), (1, N + 1, 8), (1, N)], 2, ShapeError,
                     "streams"),
}


@pytest.mark.parametrize("case_id", ERROR_CASES)
def test_errors_name_the_layer(case_id):
    text, shapes, num_tops, error, fragment = ERROR_CASES[case_id]
    with pytest.raises(error) as info:
        make_layer(text, shapes, num_tops=num_tops)
    message = str(info.value)
    assert ("'rec'" in message or "'unit'" in message) and fragment in message


# Shapes that set up fine, then change in a way Caffe's Reshape rejects.
RESHAPE_ERRORS = {
    "timesteps_changed": ([(T + 1, N, IN), (T + 1, N), (N, 4)], "timesteps changed"),
    "input_dim_changed": ([(T, N, IN + 1), (T, N), (N, 4)], "features per timestep"),
    "static_dim_changed": ([(T, N, IN), (T, N), (N, 5)], "features per stream"),
    "static_dropped": ([(T, N, IN), (T, N)], "static input"),
}


@pytest.mark.parametrize("case_id", RESHAPE_ERRORS)
def test_reshape_errors(case_id):
    shapes, fragment = RESHAPE_ERRORS[case_id]
    layer, _ = make_layer(snippet("LSTM"), [(T, N, IN), (T, N), (N, 4)])
    with pytest.raises(ShapeError, match=fragment) as info:
        layer.reshape(shapes)
    assert "LSTM layer 'rec'" in str(info.value)


def test_batch_size_may_change():
    layer, _ = make_layer(snippet("RNN"), [(T, N, IN), (T, N), (N, 4)])
    assert layer.reshape([(T, 5, IN), (T, 5), (5, 2, 2)]) == [(T, 5, H)]


# -- GPU ------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for case_id in ("lstm_expose_static", "rnn_static"):
        layer, _, bottoms = build(case_id)
        layer = layer.float()
        cpu = run(layer, *[b.float() for b in bottoms])
        layer.reset()
        gpu = run(layer.cuda(), *[b.float().cuda() for b in bottoms])
        for a, b in zip(cpu, gpu):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
    bottoms = unit_bottoms(UNIT_CASES["cont_mixed"])
    unit, _ = make_layer(UNIT_SNIPPET, [tuple(b.shape) for b in bottoms])
    cpu = run(unit, *[b.float() for b in bottoms])
    gpu = run(unit.cuda(), *[b.float().cuda() for b in bottoms])
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
