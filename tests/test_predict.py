"""The theorem's prediction: minimum separators on trees small enough to solve by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mae_hlvm.core.masks import draw_masks
from mae_hlvm.synthetic.predict import predict_cell, separators, summarise, with_class_node


def _hidden(rows: list[str]) -> np.ndarray:
    """One mask (1, S, S) from rows of '#' (hidden) and '.' (visible)."""
    return np.array([[ch == "#" for ch in row] for row in rows])[None]


def _nodes(in_c: list[np.ndarray]) -> list[list[tuple[int, int]]]:
    """Per level, the (i, j) of nodes in the separator of the single mask."""
    return [[tuple(int(v) for v in ij) for ij in np.argwhere(c[0])] for c in in_c]


# depth 1 on a 2 x 2 image: a root and four one-pixel leaves.
@pytest.mark.parametrize(
    ("dims", "rows", "expected"),
    [
        # one hidden leaf: cutting it (2) beats the root (3)
        ([3, 2], ["#.", ".."], [[], [(0, 0)]]),
        # two hidden, two visible: two leaves (4) cost more than the root (3)
        ([3, 2], ["##", ".."], [[(0, 0)], []]),
        # three hidden: cutting the one visible leaf (2) is cheapest
        ([3, 2], ["##", "#."], [[], [(1, 1)]]),
        # a leaf and the root of equal dimension tie: broken toward the root
        ([2, 2], ["#.", ".."], [[(0, 0)], []]),
    ],
)
def test_depth_one_by_hand(dims: list[int], rows: list[str], expected: list[list[tuple[int, int]]]) -> None:
    assert _nodes(separators(_hidden(rows), dims)) == expected


def test_a_leaf_with_hidden_and_visible_pixels_is_always_in_the_set() -> None:
    # depth 1 on 4 x 4: leaves own 2 x 2 blocks; one hidden pixel makes leaf (0, 0) mixed,
    # and no cheaper set exists even though the root (1) is far narrower than a leaf (9)
    rows = ["#...", "....", "....", "...."]
    assert _nodes(separators(_hidden(rows), [1, 9])) == [[], [(0, 0)]]


def test_a_whole_hidden_quadrant_is_cut_at_its_own_node() -> None:
    # depth 2 on 4 x 4 (one-pixel leaves): quadrant (0, 0) fully hidden, the rest visible.
    # Options: its node (3), the root (5), its four leaves (8): the quadrant node wins.
    rows = ["##..", "##..", "....", "...."]
    assert _nodes(separators(_hidden(rows), [5, 3, 2])) == [[], [(0, 0)], []]


def test_all_visible_or_all_hidden_needs_no_separator() -> None:
    for rows in (["..", ".."], ["##", "##"]):
        assert _nodes(separators(_hidden(rows), [3, 2])) == [[], []]


def test_separators_are_vectorised_over_masks() -> None:
    a, b = _hidden(["#.", ".."]), _hidden(["##", ".."])
    in_c = separators(np.concatenate([a, b]), [3, 2])
    assert _nodes([c[:1] for c in in_c]) == [[], [(0, 0)]]
    assert _nodes([c[1:] for c in in_c]) == [[(0, 0)], []]


def test_summary_counts_nodes_and_dimension_shares() -> None:
    in_c = separators(np.concatenate([_hidden(["#.", ".."]), _hidden(["##", ".."])]), [3, 2])
    s = summarise(in_c, [3, 2])
    assert s["nodes_per_level"] == [0.5, 0.5]
    assert s["separator_dim"] == 2.5  # (2 + 3) / 2
    assert s["dim_share_per_level"] == [0.6, 0.4]
    assert s["mean_level"] == 0.5  # mask 1: level 1 only, mask 2: root only
    assert s["predicted_level"] == 0


def test_masks_keep_the_mae_count_of_visible_units() -> None:
    masks = draw_masks(image_size=8, mask_unit=2, mask_ratio=0.75, n_masks=50, seed=0)
    assert masks.shape == (50, 8, 8)
    units = masks[:, ::2, ::2]
    assert (units.reshape(50, -1).sum(axis=1) == 12).all()  # int(16 * 0.25) = 4 visible of 16
    np.testing.assert_array_equal(masks, units.repeat(2, axis=1).repeat(2, axis=2))
    assert len({m.tobytes() for m in masks}) > 40  # masks differ between draws


def test_prediction_moves_with_ratio_and_unit_when_widths_grow_toward_the_root() -> None:
    """Each level narrower than 2x its children: a 2-2 split is cut at the parent, a 1-3 split below it."""
    dims = [15, 11, 8, 6]
    mid = predict_cell(16, dims, 2, 0.5, n_masks=300)
    low = predict_cell(16, dims, 2, 0.1, n_masks=300)
    coarse = predict_cell(16, dims, 4, 0.5, n_masks=300)
    assert low["predicted_level"] == 3 and mid["predicted_level"] == 2 and coarse["predicted_level"] == 1
    assert low["mean_level"] > mid["mean_level"] > coarse["mean_level"]
    assert low["actual_ratio"] == pytest.approx(7 / 64)  # int(64 * 0.9) = 57 of 64 units stay visible


# The class as a node (texture cue): y is a parent of every leaf too, dimension 1, level 0.
@pytest.mark.parametrize(
    ("dims", "rows", "expected", "class_in"),
    [
        # one hidden leaf of dimension 2: y + that leaf (3) costs more than the leaf alone (2),
        # which also cuts every path through y
        ([4, 2], ["#.", ".."], [[], [(0, 0)]], False),
        # the root (1) is the tree's separator; y + root (2) ties the hidden leaf (2): toward the root
        ([1, 2], ["#.", ".."], [[(0, 0)], []], True),
        # two hidden, two visible: y + root (1 + 3) beats either side's two leaves (2 x 5)
        ([3, 5], ["##", ".."], [[(0, 0)], []], True),
        # two hidden, two visible, narrow leaves: the visible side's two leaves (2 x 1) beat y + root (1 + 3)
        ([3, 1], ["##", ".."], [[], [(1, 0), (1, 1)]], False),
    ],
)
def test_class_node_by_hand(dims, rows, expected, class_in) -> None:
    hidden = _hidden(rows)
    in_c, with_y = with_class_node(hidden, dims, separators(hidden, dims))
    assert _nodes(in_c) == expected
    assert bool(with_y[0]) is class_in


def test_class_node_only_adds_y_where_the_tree_separator_is_not_one_sides_leaves() -> None:
    # default geometry: the tree part equals the class-free prediction; y joins most masks
    plain = predict_cell(16, [15, 11, 8, 6], 4, 0.5, n_masks=200)
    texture = predict_cell(16, [15, 11, 8, 6], 4, 0.5, n_masks=200, class_node=True)
    assert texture["nodes_per_level"] == plain["nodes_per_level"]
    assert plain["class_in_c"] == 0.0 and texture["class_in_c"] == 1.0
    assert texture["separator_dim"] == pytest.approx(plain["separator_dim"] + 1)
