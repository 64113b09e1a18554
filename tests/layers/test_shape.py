"""Shape and routing layers: Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Filter,
BatchReindex, Silence.

One table (CASES) drives the top-shape, forward and gradient tests; the numpy
references below copy memory the way Caffe's Forward_cpu loops do, in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradient_check import check_gradient
from layer_harness import make_layer, rand, run

from pipeline.errors import ConfigError, ShapeError

# -- numpy references (Caffe's memory-order copies) ----------------------------


def _prod(xs):
    return int(math.prod(int(x) for x in xs))


def ref_concat(axis):
    def ref(bs):
        ax = axis % bs[0].ndim
        shape = list(bs[0].shape)
        shape[ax] = sum(b.shape[ax] for b in bs)
        outer, inner, top_c = _prod(shape[:ax]), _prod(shape[ax + 1 :]), shape[ax]
        top = np.empty(_prod(shape))
        off = 0
        for b in bs:
            flat, c = b.reshape(-1), b.shape[ax]
            for n in range(outer):
                dst = (n * top_c + off) * inner
                top[dst : dst + c * inner] = flat[n * c * inner : (n + 1) * c * inner]
            off += c
        return [top.reshape(shape)]

    return ref


def ref_slice(axis, sizes):
    def ref(bs):
        (b,) = bs
        ax = axis % b.ndim
        outer, inner, c = _prod(b.shape[:ax]), _prod(b.shape[ax + 1 :]), b.shape[ax]
        flat, tops, off = b.reshape(-1), [], 0
        for s in sizes:
            top = np.empty(outer * s * inner)
            for n in range(outer):
                src = (n * c + off) * inner
                top[n * s * inner : (n + 1) * s * inner] = flat[src : src + s * inner]
            shape = list(b.shape)
            shape[ax] = s
            tops.append(top.reshape(shape))
            off += s
        return tops

    return ref


def ref_split(n):
    return lambda bs: [bs[0].copy() for _ in range(n)]


def ref_reshape(shape):
    return lambda bs: [bs[0].reshape(-1).reshape(shape)]


def ref_crop(offsets, top_shape):
    def ref(bs):
        top = np.empty(top_shape)
        for idx in np.ndindex(*top_shape):
            top[idx] = bs[0][tuple(i + o for i, o in zip(idx, offsets))]
        return [top]

    return ref


def ref_tile(axis, tiles):
    def ref(bs):
        (b,) = bs
        ax = axis % b.ndim
        outer, inner = _prod(b.shape[:ax]), _prod(b.shape[ax:])
        flat, out = b.reshape(-1), []
        for i in range(outer):
            for _ in range(tiles):
                out.extend(flat[i * inner : (i + 1) * inner])
        shape = list(b.shape)
        shape[ax] *= tiles
        return [np.array(out).reshape(shape)]

    return ref


def ref_filter(bs):
    *data, sel = bs
    rows = [i for i in range(sel.shape[0]) if sel.reshape(-1)[i] != 0]
    return [np.array([d[i] for i in rows]).reshape((len(rows),) + d.shape[1:]) for d in data]


def ref_batch_reindex(bs):
    x, idx = bs
    return [np.array([x[int(i)] for i in idx]).reshape((len(idx),) + x.shape[1:])]


# -- the table -----------------------------------------------------------------

SELECT = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
INCEPTION = [(1, 64, 28, 28), (1, 128, 28, 28), (1, 32, 28, 28), (1, 32, 28, 28)]


def case(id, snippet, bottoms, tops, ref, *, inputs=None, grad=True, check=None,
         fwd_tops=None, max_el=None, num_tops=None):
    return pytest.param(
        dict(snippet=snippet, bottoms=bottoms, tops=tops, ref=ref, inputs=inputs, grad=grad,
             check=check, fwd_tops=fwd_tops or tops, max_el=max_el, num_tops=num_tops),
        id=id,
    )


CASES = [
    # Concat
    case("concat_inception_4way", "name: 'inc' type: 'Concat'", INCEPTION,
         [(1, 256, 28, 28)], ref_concat(1), max_el=8),
    case("concat_axis0", "name: 'c' type: 'Concat' concat_param { axis: 0 }",
         [(2, 3, 4), (3, 3, 4)], [(5, 3, 4)], ref_concat(0)),
    case("concat_axis_neg1", "name: 'c' type: 'Concat' concat_param { axis: -1 }",
         [(2, 3), (2, 5), (2, 1)], [(2, 9)], ref_concat(-1)),
    case("concat_legacy_dim", "name: 'c' type: 'Concat' concat_param { concat_dim: 2 }",
         [(2, 2, 3), (2, 2, 2)], [(2, 2, 5)], ref_concat(2)),
    case("concat_one_bottom", "name: 'c' type: 'Concat'", [(2, 3, 2)], [(2, 3, 2)],
         ref_concat(1)),
    # Slice
    case("slice_points", "name: 's' type: 'Slice' top: 'a' top: 'b' top: 'c' "
         "slice_param { slice_point: 1 slice_point: 3 }",
         [(2, 5, 3)], [(2, 1, 3), (2, 2, 3), (2, 2, 3)], ref_slice(1, [1, 2, 2])),
    case("slice_equal_axis0", "name: 's' type: 'Slice' top: 'a' top: 'b' top: 'c' "
         "slice_param { axis: 0 }",
         [(6, 2)], [(2, 2), (2, 2), (2, 2)], ref_slice(0, [2, 2, 2])),
    case("slice_legacy_dim", "name: 's' type: 'Slice' top: 'a' top: 'b' "
         "slice_param { slice_dim: 2 slice_point: 3 }",
         [(2, 2, 4)], [(2, 2, 3), (2, 2, 1)], ref_slice(2, [3, 1])),
    case("slice_axis_neg1", "name: 's' type: 'Slice' top: 'a' top: 'b' "
         "slice_param { axis: -1 }",
         [(3, 4)], [(3, 2), (3, 2)], ref_slice(-1, [2, 2])),
    case("slice_siamese_pair", "name: 'slice_pair' type: 'Slice' top: 'data' top: 'data_p' "
         "slice_param { slice_dim: 1 slice_point: 1 }",
         [(2, 2, 28, 28)], [(2, 1, 28, 28), (2, 1, 28, 28)], ref_slice(1, [1, 1]), max_el=40),
    # Split
    case("split_3", "name: 'sp' type: 'Split' top: 'a' top: 'b' top: 'c'",
         [(2, 3, 4)], [(2, 3, 4)] * 3, ref_split(3)),
    case("split_1", "name: 'sp' type: 'Split'", [(3, 2)], [(3, 2)], ref_split(1)),
    # Flatten
    case("flatten_default", "name: 'f' type: 'Flatten'", [(2, 3, 4, 5)], [(2, 60)],
         ref_reshape((2, 60)), max_el=60),
    case("flatten_pool5", "name: 'flat' type: 'Flatten'", [(2, 256, 6, 6)], [(2, 9216)],
         ref_reshape((2, 9216)), max_el=40),
    case("flatten_middle", "name: 'f' type: 'Flatten' flatten_param { axis: 1 end_axis: 2 }",
         [(2, 3, 4, 5)], [(2, 12, 5)], ref_reshape((2, 12, 5)), max_el=60),
    case("flatten_neg_end", "name: 'f' type: 'Flatten' flatten_param { axis: 0 end_axis: -2 }",
         [(2, 3, 4)], [(6, 4)], ref_reshape((6, 4))),
    case("flatten_empty_range", "name: 'f' type: 'Flatten' flatten_param { axis: 2 end_axis: 1 }",
         [(2, 3, 4)], [(2, 3, 1, 4)], ref_reshape((2, 3, 1, 4))),
    # Reshape
    case("reshape_copy_infer",
         "name: 'r' type: 'Reshape' reshape_param { shape { dim: 0 dim: -1 } }",
         [(2, 3, 4, 5)], [(2, 60)], ref_reshape((2, 60)), max_el=60),
    case("reshape_full", "name: 'r' type: 'Reshape' "
         "reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 5 } }",
         [(2, 3, 4, 5)], [(2, 2, 6, 5)], ref_reshape((2, 2, 6, 5)), max_el=60),
    case("reshape_axis1_num1", "name: 'r' type: 'Reshape' "
         "reshape_param { shape { dim: 3 dim: 1 } axis: 1 num_axes: 1 }",
         [(2, 3, 4)], [(2, 3, 1, 4)], ref_reshape((2, 3, 1, 4))),
    case("reshape_append_axis", "name: 'r' type: 'Reshape' "
         "reshape_param { shape { dim: 1 } axis: -1 num_axes: 0 }",
         [(2, 3)], [(2, 3, 1)], ref_reshape((2, 3, 1))),
    case("reshape_prepend_axis", "name: 'r' type: 'Reshape' "
         "reshape_param { shape { dim: 1 } axis: 0 num_axes: 0 }",
         [(2, 3)], [(1, 2, 3)], ref_reshape((1, 2, 3))),
    case("reshape_copy_from_axis", "name: 'r' type: 'Reshape' "
         "reshape_param { shape { dim: 0 dim: -1 } axis: 1 }",
         [(2, 3, 4, 2)], [(2, 3, 8)], ref_reshape((2, 3, 8))),
    # Crop
    case("crop_fcn", "name: 'score' type: 'Crop' crop_param { axis: 2 offset: 6 }",
         [(1, 21, 44, 44), (1, 3, 32, 32)], [(1, 21, 32, 32)],
         ref_crop((0, 0, 6, 6), (1, 21, 32, 32)), check=[0], max_el=40),
    case("crop_offsets_per_axis", "name: 'cr' type: 'Crop' "
         "crop_param { axis: 1 offset: 1 offset: 2 offset: 3 }",
         [(2, 5, 6, 7), (2, 3, 4, 4)], [(2, 3, 4, 4)],
         ref_crop((0, 1, 2, 3), (2, 3, 4, 4)), check=[0], max_el=80),
    case("crop_axis_neg1_no_offset", "name: 'cr' type: 'Crop' crop_param { axis: -1 }",
         [(2, 3, 5), (9, 9, 2)], [(2, 3, 2)], ref_crop((0, 0, 0), (2, 3, 2)), check=[0]),
    case("crop_axis0_one_offset", "name: 'cr' type: 'Crop' crop_param { axis: 0 offset: 1 }",
         [(3, 4, 5), (2, 2, 2)], [(2, 2, 2)], ref_crop((1, 1, 1), (2, 2, 2)), check=[0]),
    # Tile
    case("tile_axis1", "name: 't' type: 'Tile' tile_param { tiles: 3 }",
         [(2, 3, 2)], [(2, 9, 2)], ref_tile(1, 3)),
    case("tile_axis_neg1", "name: 't' type: 'Tile' tile_param { axis: -1 tiles: 2 }",
         [(2, 3)], [(2, 6)], ref_tile(-1, 2)),
    case("tile_axis0", "name: 't' type: 'Tile' tile_param { axis: 0 tiles: 2 }",
         [(2, 3)], [(4, 3)], ref_tile(0, 2)),
    # Filter
    case("filter_two_data", "name: 'fi' type: 'Filter' top: 'a' top: 'b'",
         [(4, 3), (4, 2, 2), (4,)], [(4, 3), (4, 2, 2)], ref_filter,
         inputs=[rand(4, 3, seed=1), rand(4, 2, 2, seed=2), SELECT],
         check=[0, 1], fwd_tops=[(3, 3), (3, 2, 2)]),
    case("filter_selector_n1", "name: 'fi' type: 'Filter'",
         [(4, 2, 3), (4, 1)], [(4, 2, 3)], ref_filter,
         inputs=[rand(4, 2, 3, seed=3), torch.tensor([[0.0], [2.0], [0.0], [-1.0]])],
         check=[0], fwd_tops=[(2, 2, 3)]),
    case("filter_none_kept", "name: 'fi' type: 'Filter'",
         [(3, 2), (3,)], [(3, 2)], ref_filter,
         inputs=[rand(3, 2, seed=4), torch.zeros(3, dtype=torch.float64)],
         grad=False, fwd_tops=[(0, 2)]),
    # BatchReindex
    case("batch_reindex_repeat", "name: 'br' type: 'BatchReindex'",
         [(4, 3, 2), (5,)], [(5, 3, 2)], ref_batch_reindex,
         inputs=[rand(4, 3, 2, seed=5), torch.tensor([3.0, 0.0, 3.0, 1.0, 2.7],
                                                      dtype=torch.float64)],
         check=[0]),
    case("batch_reindex_subset", "name: 'br' type: 'BatchReindex'",
         [(3, 4), (2,)], [(2, 4)], ref_batch_reindex,
         inputs=[rand(3, 4, seed=6), torch.tensor([2.0, 2.0], dtype=torch.float64)],
         check=[0]),
]


def _build(c):
    return make_layer(c["snippet"], c["bottoms"], num_tops=c["num_tops"])


def _inputs(c):
    if c["inputs"] is not None:
        return [t.clone() for t in c["inputs"]]
    return [rand(*s, seed=i) for i, s in enumerate(c["bottoms"])]


@pytest.mark.parametrize("c", CASES)
def test_top_shapes(c):
    _, tops = _build(c)
    assert tops == [tuple(t) for t in c["tops"]]


@pytest.mark.parametrize("c", CASES)
def test_forward_matches_numpy(c):
    layer, _ = _build(c)
    xs = _inputs(c)
    tops = run(layer, *xs)
    expected = c["ref"]([x.numpy().astype(np.float64) for x in xs])
    assert [tuple(t.shape) for t in tops] == [tuple(s) for s in c["fwd_tops"]]
    assert len(tops) == len(expected)
    for got, want in zip(tops, expected):
        assert got.dtype == torch.float64
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("c", [p for p in CASES if p.values[0]["grad"]])
def test_gradient(c):
    layer, _ = _build(c)
    checked = check_gradient(layer, _inputs(c), check_bottoms=c["check"],
                             max_elements=c["max_el"])
    assert checked > 0


# -- behaviour beyond the table ------------------------------------------------


def test_split_tops_are_independent_copies():
    layer, _ = make_layer("name: 'sp' type: 'Split' top: 'a' top: 'b'", [(2, 3)])
    x = rand(2, 3)
    a, b = run(layer, x)
    a.add_(1.0)
    assert torch.equal(b, rand(2, 3)) and torch.equal(x, rand(2, 3))


def test_tile_equals_numpy_tile_on_axis():
    layer, _ = make_layer("name: 't' type: 'Tile' tile_param { axis: 1 tiles: 4 }", [(2, 3, 2)])
    x = rand(2, 3, 2)
    (y,) = run(layer, x)
    np.testing.assert_array_equal(y.numpy(), np.tile(x.numpy(), (1, 4, 1)))


def test_batch_reindex_gradient_sums_repeats():
    layer, _ = make_layer("name: 'br' type: 'BatchReindex'", [(3, 2), (4,)])
    x = rand(3, 2).requires_grad_()
    idx = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    (y,) = run(layer, x, idx)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 1], [3, 3], [0, 0]])


def test_filter_gradient_zero_at_dropped_rows_and_none_to_selector():
    layer, _ = make_layer("name: 'fi' type: 'Filter'", [(4, 2), (4,)])
    x = rand(4, 2).requires_grad_()
    sel = SELECT.clone().requires_grad_()
    (y,) = run(layer, x, sel)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 1], [0, 0], [1, 1], [1, 1]])
    assert sel.grad is None


def test_filter_reshape_follows_new_batch_size():
    layer, tops = make_layer("name: 'fi' type: 'Filter' top: 'a' top: 'b'",
                             [(4, 3), (4, 5), (4, 1, 1)])
    assert tops == [(4, 3), (4, 5)]
    assert layer.reshape([(6, 3), (6, 5), (6,)]) == [(6, 3), (6, 5)]


def test_reshape_follows_new_input_shape():
    layer, tops = make_layer(
        "name: 'r' type: 'Reshape' reshape_param { shape { dim: 0 dim: -1 } }", [(2, 6)])
    assert tops == [(2, 6)]
    assert layer.reshape([(5, 2, 3)]) == [(5, 6)]
    (y,) = run(layer, rand(5, 2, 3))
    assert y.shape == (5, 6)


def test_silence_has_no_tops():
    layer, tops = make_layer("name: 'sil' type: 'Silence' bottom: 'a' bottom: 'b'",
                             [(2, 3), (4,)], num_tops=0)
    assert tops == []
    assert layer(rand(2, 3), rand(4)) == ()


def test_plain_constructor_defaults():
    from pipeline.layers.shape import Concat, Crop, Flatten, Reshape, Slice, Tile

    assert Concat().axis == 1 and Concat().concat_dim is None
    assert Slice().axis == 1 and Slice().slice_point == ()
    assert (Flatten().axis, Flatten().end_axis) == (1, -1)
    assert (Reshape().axis, Reshape().num_axes) == (0, -1)
    assert (Crop().axis, Crop().offset) == (2, ())
    assert Tile(tiles=2).axis == 1


# -- errors: each message names the layer ------------------------------------

ERRORS = [
    ("concat_mismatch", "name: 'cat' type: 'Concat'", [(2, 3, 4), (2, 3, 5)], None,
     ShapeError, ["Concat layer 'cat'", "bottom 1", "(2, 3, 5)", "(2, 3, 4)"]),
    ("concat_ndim", "name: 'cat' type: 'Concat'", [(2, 3, 4), (2, 3)], None,
     ShapeError, ["Concat layer 'cat'", "bottom 1", "(2, 3)"]),
    ("concat_both_axes", "name: 'cat' type: 'Concat' concat_param { axis: 1 concat_dim: 1 }",
     [(2, 3)], None, ConfigError, ["Concat layer 'cat'", "not both"]),
    ("concat_axis_range", "name: 'cat' type: 'Concat' concat_param { axis: 3 }",
     [(2, 3, 4), (2, 3, 4)], None, ConfigError, ["Concat layer 'cat'", "axis=3"]),
    ("concat_dim_range", "name: 'cat' type: 'Concat' concat_param { concat_dim: 3 }",
     [(2, 3, 4)], None, ConfigError, ["Concat layer 'cat'", "concat_dim=3"]),
    ("slice_point_count", "name: 'sl' type: 'Slice' top: 'a' top: 'b' "
     "slice_param { slice_point: 1 slice_point: 2 }", [(2, 4)], None,
     ConfigError, ["Slice layer 'sl'", "3 tops"]),
    ("slice_not_increasing", "name: 'sl' type: 'Slice' top: 'a' top: 'b' top: 'c' "
     "slice_param { slice_point: 2 slice_point: 2 }", [(2, 4)], None,
     ConfigError, ["Slice layer 'sl'", "increasing"]),
    ("slice_point_past_end", "name: 'sl' type: 'Slice' top: 'a' top: 'b' "
     "slice_param { slice_point: 4 }", [(2, 4)], None, ShapeError, ["Slice layer 'sl'", "size 4"]),
    ("slice_uneven", "name: 'sl' type: 'Slice' top: 'a' top: 'b' top: 'c'", [(2, 4)], None,
     ShapeError, ["Slice layer 'sl'", "evenly divide"]),
    ("slice_both_axes", "name: 'sl' type: 'Slice' slice_param { axis: 1 slice_dim: 1 }",
     [(2, 4)], None, ConfigError, ["Slice layer 'sl'", "not both"]),
    ("flatten_backwards", "name: 'fl' type: 'Flatten' flatten_param { axis: 3 end_axis: 1 }",
     [(2, 3, 4, 5)], None, ConfigError, ["Flatten layer 'fl'", "end_axis=1"]),
    ("flatten_axis_range", "name: 'fl' type: 'Flatten' flatten_param { axis: 4 }",
     [(2, 3, 4, 5)], None, ConfigError, ["Flatten layer 'fl'", "axis=4"]),
    ("reshape_two_infer", "name: 'rs' type: 'Reshape' reshape_param { shape { dim: -1 dim: -1 } }",
     [(2, 3)], None, ConfigError, ["Reshape layer 'rs'", "more than one -1"]),
    ("reshape_count", "name: 'rs' type: 'Reshape' reshape_param { shape { dim: 7 dim: 3 } }",
     [(2, 3, 4)], None, ShapeError, ["Reshape layer 'rs'", "(7, 3)", "(2, 3, 4)"]),
    ("reshape_infer_indivisible", "name: 'rs' type: 'Reshape' "
     "reshape_param { shape { dim: -1 dim: 5 } }", [(2, 3, 4)], None,
     ShapeError, ["Reshape layer 'rs'", "divisible"]),
    ("reshape_zero_no_axis", "name: 'rs' type: 'Reshape' "
     "reshape_param { shape { dim: 0 dim: 0 dim: 0 } }", [(24, 1)], None,
     ShapeError, ["Reshape layer 'rs'", "no axis 2"]),
    ("reshape_axis_range", "name: 'rs' type: 'Reshape' reshape_param { shape { dim: 6 } axis: 4 }",
     [(2, 3)], None, ConfigError, ["Reshape layer 'rs'", "axis=4"]),
    ("reshape_num_axes_range", "name: 'rs' type: 'Reshape' "
     "reshape_param { shape { dim: 6 } axis: 1 num_axes: 2 }", [(2, 3)], None,
     ConfigError, ["Reshape layer 'rs'", "num_axes=2"]),
    ("crop_out_of_bounds", "name: 'cr' type: 'Crop' crop_param { offset: 3 }",
     [(1, 2, 8, 8), (1, 2, 6, 6)], None, ShapeError, ["Crop layer 'cr'", "axis 2", "offset 3"]),
    ("crop_offset_count", "name: 'cr' type: 'Crop' crop_param { axis: 1 offset: 1 offset: 1 }",
     [(1, 2, 8, 8), (1, 2, 6, 6)], None, ConfigError, ["Crop layer 'cr'", "2 offsets"]),
    ("crop_axis_range", "name: 'cr' type: 'Crop' crop_param { axis: 4 }",
     [(1, 2, 8, 8), (1, 2, 6, 6)], None, ConfigError, ["Crop layer 'cr'", "axis=4"]),
    ("crop_one_bottom", "name: 'cr' type: 'Crop'", [(1, 2, 8, 8)], None,
     ConfigError, ["Crop layer 'cr'", "2 bottom"]),
    ("tile_missing", "name: 'ti' type: 'Tile'", [(2, 3)], None,
     ConfigError, ["Tile layer 'ti'", "tiles"]),
    ("tile_zero", "name: 'ti' type: 'Tile' tile_param { tiles: 0 }", [(2, 3)], None,
     ConfigError, ["Tile layer 'ti'", "positive"]),
    ("filter_top_count", "name: 'fi' type: 'Filter' top: 'a' top: 'b'", [(4, 3), (4,)], None,
     ConfigError, ["Filter layer 'fi'", "one top per data bottom"]),
    ("filter_selector_shape", "name: 'fi' type: 'Filter'", [(4, 3), (4, 2)], None,
     ShapeError, ["Filter layer 'fi'", "selector", "(4, 2)"]),
    ("filter_first_dim", "name: 'fi' type: 'Filter'", [(5, 3), (4,)], None,
     ShapeError, ["Filter layer 'fi'", "bottom 0", "(5, 3)"]),
    ("reindex_2d", "name: 'br' type: 'BatchReindex'", [(4, 3), (2, 2)], None,
     ShapeError, ["BatchReindex layer 'br'", "1-D"]),
    ("silence_with_top", "name: 'si' type: 'Silence' top: 'x'", [(2,)], None,
     ConfigError, ["Silence layer 'si'"]),
]


@pytest.mark.parametrize("snippet, shapes, num_tops, error, fragments",
                         [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_errors_name_the_layer(snippet, shapes, num_tops, error, fragments):
    with pytest.raises(error) as info:
        make_layer(snippet, shapes, num_tops=num_tops)
    for f in fragments:
        assert f in str(info.value)


@pytest.mark.parametrize("idx", [[0.0, 4.0], [-1.0, 0.0], [-0.5], [float("nan")]])
def test_batch_reindex_index_out_of_range(idx):
    layer, _ = make_layer("name: 'br' type: 'BatchReindex'", [(4, 3), (len(idx),)])
    with pytest.raises(ShapeError, match="BatchReindex layer 'br'.*out of range"):
        run(layer, rand(4, 3), torch.tensor(idx, dtype=torch.float64))


# -- CUDA agrees with CPU --------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    picks = {"concat_inception_4way", "slice_points", "crop_fcn", "tile_axis1",
             "filter_two_data", "batch_reindex_repeat", "reshape_full", "split_3"}
    ran = 0
    for p in CASES:
        if p.id not in picks:
            continue
        ran += 1
        c = p.values[0]
        layer, _ = _build(c)
        xs = [x.float() for x in _inputs(c)]
        cpu = run(layer, *xs)
        xs_gpu = [x.cuda().requires_grad_(i in (c["check"] or [0])) for i, x in enumerate(xs)]
        gpu = run(layer.cuda(), *xs_gpu)
        for a, b in zip(cpu, gpu):
            assert b.device.type == "cuda"
            torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)
        sum(t.sum() for t in gpu).backward()
        assert xs_gpu[0].grad is not None and xs_gpu[0].grad.device.type == "cuda"
    assert ran == len(picks)
