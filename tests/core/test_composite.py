"""Reducers against numpy references, including all-NaN pixels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clearsky.core.composite import (
    BestPixel,
    Stack,
    count_valid,
    merge_pass,
    reduce_stack,
    reduce_statistics,
    to_uint16,
    to_visual,
)
from clearsky.core.params import Method


def random_stack(n=9, nb=3, h=40, w=50, nan_share=0.4, seed=1):
    rng = np.random.default_rng(seed)
    values = rng.random((n, nb, h, w), dtype=np.float32) * 0.5
    invalid = rng.random((n, 1, h, w)) < nan_share  # per observation, all bands alike
    values[np.broadcast_to(invalid, values.shape)] = np.nan
    values[:, :, :3, :3] = np.nan  # pixels without any observation
    values[:, :, 5, 5] = values[0, :, 5, 5]  # ties
    return values


def test_best_pixel_fills_in_order_and_reports_counts():
    best = BestPixel(2, (2, 3))
    first = np.array([[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]], dtype=np.float32)
    valid1 = np.array([[True, False, True], [False, False, False]])
    assert best.add(first, valid1, source=0) == 2
    second = first + 100
    second[1, 0, 1] = np.nan  # a NaN band makes the pixel unusable even when "valid"
    assert best.add(second, np.ones((2, 3), bool), source=1) == 3
    assert best.add(first + 200, np.ones((2, 3), bool), source=2) == 1
    values, source = best.result()
    np.testing.assert_array_equal(source, [[0, 2, 0], [1, 1, 1]])
    np.testing.assert_array_equal(values[0], [[1, 202, 3], [104, 105, 106]])
    np.testing.assert_array_equal(values[1], [[7, 208, 9], [110, 111, 112]])
    assert best.filled.all() and best.is_complete(np.ones((2, 3), bool))
    assert best.add(first, np.ones((2, 3), bool), source=3) == 0


def test_best_pixel_empty_result_and_completeness_on_a_target():
    best = BestPixel(1, (3, 3))
    values, source = best.result()
    assert values.dtype == np.float32 and np.isnan(values).all()
    assert source.dtype == np.int16 and (source == -1).all()
    valid = np.zeros((3, 3), bool)
    valid[1, 1] = True
    best.add(np.ones((1, 3, 3), np.float32), valid, 4)
    target = np.zeros((3, 3), bool)
    target[1, 1] = True
    assert best.is_complete(target)
    target[0, 0] = True
    assert not best.is_complete(target)


def test_merge_pass_first_valid_tile_wins():
    rng = np.random.default_rng(5)
    tiles = [(rng.random((2, 6, 7), dtype=np.float32), rng.random((6, 7)) < 0.5)
             for _ in range(3)]
    values, valid = merge_pass(tiles)
    exp_valid = tiles[0][1] | tiles[1][1] | tiles[2][1]
    np.testing.assert_array_equal(valid, exp_valid)
    for r in range(6):
        for c in range(7):
            owner = next((v for v, ok in tiles if ok[r, c]), None)
            if owner is None:
                assert np.isnan(values[:, r, c]).all()
            else:
                np.testing.assert_array_equal(values[:, r, c], owner[:, r, c])
    single_values, single_valid = merge_pass(tiles[:1])
    assert single_values is tiles[0][0] and (single_valid == tiles[0][1]).all()
    with pytest.raises(ValueError):
        merge_pass([])


@pytest.mark.parametrize("q", [0, 10, 25, 33.3, 50, 75, 90, 100])
def test_reduce_stack_percentile_matches_nanpercentile(q):
    values = random_stack()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "All-NaN slice" RuntimeWarning from us
        got = reduce_stack(values, "percentile", q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.nanpercentile(values, q, axis=0)
    assert got.dtype == np.float32 and got.shape == values.shape[1:]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got[:, :3, :3]).all()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_reduce_stack_median_matches_nanmedian_for_odd_and_even_counts():
    for n in (1, 2, 5, 6):
        values = random_stack(n=n, seed=n)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = reduce_stack(values, Method.MEDIAN)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.nanmedian(values, axis=0)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_reduce_stack_rejects_unknown_methods():
    with pytest.raises(ValueError, match="Unknown reducer"):
        reduce_stack(random_stack(n=2), "mean")
    with pytest.raises(ValueError):
        reduce_stack(random_stack(n=2), "percentile", 120)


def test_count_valid():
    valid = np.zeros((4, 2, 2), bool)
    valid[:, 0, 0] = True
    valid[1:3, 1, 1] = True
    out = count_valid(valid)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[4, 0], [0, 2]])


def test_to_uint16_scales_rounds_clips_and_keeps_nodata():
    refl = np.array([np.nan, -0.05, 0.0, 0.00004, 0.12345, 1.0, 7.0], dtype=np.float32)
    np.testing.assert_array_equal(to_uint16(refl), [0, 1, 1, 1, 1234, 10000, 65535])
    assert to_uint16(refl).dtype == np.uint16


def test_to_visual_stretches_0_to_0_3_onto_1_to_255():
    refl = np.array([np.nan, -0.1, 0.0, 0.15, 0.3, 0.9], dtype=np.float32)
    out = to_visual(refl)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 1, 1, 128, 255, 255])
    assert to_visual(np.float32([0.5]), max_reflectance=0.5)[0] == 255


def test_observations_left_out_by_drop_are_as_if_they_were_nan():
    """`drop` spares the feathering a copy of the stack per set of passes left out; the
    numbers must be those of the stack with the dropped observations NaN."""
    values = random_stack(n=11, nb=3, seed=4)
    drop = np.random.default_rng(5).random((11, 40, 50)) < 0.3
    nan_copy = np.where(drop[:, None], np.float32(np.nan), values)
    for method, q in (("median", 50), ("percentile", 20), ("percentile", 90)):
        got = reduce_stack(values, method, q, drop=drop)
        np.testing.assert_array_equal(got, reduce_stack(nan_copy, method, q))
    stats = ["p25", "mean", "std", "p75"]
    np.testing.assert_array_equal(reduce_statistics(values, stats, drop=drop),
                                  reduce_statistics(nan_copy, stats))
    before = values.copy()
    reduce_stack(values, "median")
    np.testing.assert_array_equal(values, before)  # the stack itself is never reordered


def test_a_stack_holds_what_was_added_in_order():
    stack = Stack(5, 2, (3, 4))
    for k in range(3):
        stack.add(np.full((2, 3, 4), k, "float32"))
    assert stack.view().shape == (3, 2, 3, 4)
    assert [float(stack.view()[k, 1, 2, 3]) for k in range(3)] == [0.0, 1.0, 2.0]


def test_a_stack_written_by_slot_closes_the_gaps_of_passes_that_gave_nothing():
    """Pass reads write straight into their slot; a pass that gave no pixel leaves no
    observation: the view is the kept slots, in order, as if they had been added."""
    stack = Stack(5, 2, (3, 4))
    valid = np.ones((3, 4), bool)
    valid[0, 0] = False  # never written: NaN once kept
    for k in (0, 2, 3):
        np.copyto(stack.slot(k), np.float32(k), where=valid[None])
    for k in (0, 2, 3):
        stack.keep(k, valid)
    view = stack.view()
    assert view.shape == (3, 2, 3, 4)
    assert [float(view[k, 1, 2, 3]) for k in range(3)] == [0.0, 2.0, 3.0]
    assert np.isnan(view[:, :, 0, 0]).all()
    assert not np.isnan(view[:, :, valid]).any()
