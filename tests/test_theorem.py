"""The theorem, faithfully (docs/theorem.md): the copy tree meets the premises, the prediction
is the hand-solved one, and the masked measures order encoders whose answer is known."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from helpers import REPO

from mae_hlvm.core.config import parse_params
from mae_hlvm.core.data import save_dataset
from mae_hlvm.synthetic import copytree
from mae_hlvm.synthetic.latents import categories, category_shares, latent_variables
from mae_hlvm.synthetic.masked import frontier, probe_masks, visible_token_index
from mae_hlvm.synthetic.predict import predict_copytree_cell

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def params(data: dict | None = None, grid: dict | None = None):
    raw = copy.deepcopy(BASE)
    raw.pop("stability", None)
    raw["data"].update(data or {})
    raw["grid"].update(grid or {})
    return parse_params(raw)


def test_the_default_generator_is_the_copy_tree_and_its_parts_reach_r_to_the_depth_leaves():
    data = params().data
    assert data.generator == "copytree" and data.replication == 2 and data.texture_separation == 0
    fns = copytree.draw_functions(data)
    reach = fns.tree.reach()
    depth = data.depth
    for level, r in enumerate(reach):
        assert r.shape == (4**level, data.latent_dims[level], 4**depth)
        assert (r.sum(axis=2) == data.replication ** (depth - level)).all(), level
    # every leaf holds the same number of items: each child got as many of its parent's
    sizes = copytree.content_sizes(depth, list(data.latent_dims), data.replication)
    assert fns.tree.items[-1].shape == (4**depth, sizes[-1], 3) and sizes == [16, 16, 12, 9]
    # a part reaches only leaves under its own node
    g = 2**depth
    for level in range(depth + 1):
        side = g // 2**level
        for node in range(4**level):
            i, j = divmod(node, 2**level)
            leaves = np.flatnonzero(reach[level][node].any(axis=0))
            li, lj = np.divmod(leaves, g)
            assert ((li // side == i) & (lj // side == j)).all()


def test_every_latent_is_a_function_of_the_image_through_the_inverse_renderer():
    data = params({"n_train": 200, "n_test": 100}).data
    ds = copytree.generate_dataset(data)
    fns = copytree.draw_functions(data)
    vectors = fns.renderer.inverse(copytree.image_blocks(ds.images.astype(np.float64), fns.block))
    content = vectors[..., : vectors.shape[-1] - fns.noise_dims]  # (N, leaves, items)
    own = [z.reshape(len(z), 4**lv, -1).astype(np.float64) for lv, z in enumerate(ds.latents)]
    assert np.abs(content - copytree.leaf_contents(fns, own)).max() < 1e-4  # float32 images
    # and each part can be read from ANY one leaf it reaches: every copy is the same value
    leaf_items = fns.tree.items[-1]
    for leaf in (0, 17, 63):
        for slot, (lv, node, part) in enumerate(leaf_items[leaf]):
            assert np.allclose(content[:, leaf, slot], own[lv][:, node, part], atol=1e-4)
    # the renderer is exactly invertible
    v = np.random.default_rng(0).standard_normal((3, 64, 12))
    assert np.abs(fns.renderer.inverse(fns.renderer.forward(v)) - v).max() < 1e-10


def test_the_copy_tree_is_byte_identical_and_its_test_set_does_not_follow_n_train(tmp_path):
    data = params({"n_train": 60, "n_test": 40, "n_classes": 2}).data
    for name in ("a", "b"):
        save_dataset(tmp_path / f"{name}.npz", copytree.generate_dataset(data))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    more = copytree.generate_dataset(data.model_copy(update={"n_train": 90}))
    less = copytree.generate_dataset(data)
    assert np.array_equal(more.images[more.is_test], less.images[less.is_test])
    assert less.settings["generator_version"] == copytree.GENERATOR_VERSION == "hlvm-copytree-1"


# ----------------------------------------------------------------------------- the prediction, by hand

TOY = {"image_size": 4, "depth": 1, "latent_dims": [4, 2], "noise_scales": [1.0, 1.0], "n_train": 40, "n_test": 20,
       "n_classes": 2}  # 4 leaves of 2 x 2 x 3; each of 4 root parts in 2 leaves, 2 own parts per leaf
TOY_GRID = {"mask_ratios": [0.25, 0.5], "mask_units": [2], "seeds": [0]}


def test_the_prediction_of_a_four_leaf_tree_is_the_hand_solved_one():
    p = params(TOY, TOY_GRID)
    variables = latent_variables(p.data)
    assert variables.reach.sum(axis=1).tolist() == [2] * 4 + [1] * 8
    # one leaf hidden (ratio 0.25, 3 of 4 units visible): the 2 root parts that reach it are shared,
    # the other 2 visible only; its 2 own parts hidden only, the other leaves' 6 visible only
    hidden = np.zeros((1, 4, 4), dtype=bool)
    hidden[0, :2, :2] = True  # leaf 0
    cats = categories(variables, hidden, 1)[0]
    reaches_leaf0 = variables.reach[:, 0]
    assert ((cats == 0) == (reaches_leaf0 & (variables.level == 0))).all()
    assert category_shares(variables, cats[None]) == {"c": [0.5, 0.0], "v": [0.5, 0.75], "h": [0.0, 0.25]}
    cell = predict_copytree_cell(p.data, 2, 0.25)
    assert cell["c_share_per_level"] == [0.5, 0.0] and cell["c_size"] == 2.0 and cell["mean_level"] == 0.0
    # two leaves hidden: a root part is shared when exactly one of its 2 leaves is hidden, 4 of the
    # 6 ways to hide 2 of 4 leaves: 2/3 in expectation over the masks
    half = predict_copytree_cell(p.data, 2, 0.5)
    assert half["c_share_per_level"][0] == pytest.approx(2 / 3, abs=0.02) and half["c_share_per_level"][1] == 0.0


def test_the_default_prediction_peaks_in_the_middle_and_drops_a_level_at_the_larger_unit():
    data = params().data
    shares = {(u, r): predict_copytree_cell(data, u, r, n_masks=500)["c_share_per_level"]
              for u in (2, 4) for r in (0.1, 0.5, 0.9)}
    for unit in (2, 4):
        for level in range(2):
            assert shares[(unit, 0.5)][level] > max(shares[(unit, 0.1)][level], shares[(unit, 0.9)][level])
    assert all(shares[(4, r)][2] == 0.0 and shares[(2, r)][2] > 0.1 for r in (0.1, 0.5, 0.9))
    assert all(shares[(4, r)][0] < shares[(2, r)][0] for r in (0.1, 0.5, 0.9))  # less root shared at unit 4
    assert all(s[3] == 0.0 for s in shares.values())  # a leaf's own parts reach one leaf: never shared


def test_the_schema_refuses_a_copy_tree_it_cannot_build():
    from mae_hlvm.core.errors import ParamsError

    with pytest.raises(ParamsError, match="has no texture cue"):
        params({"texture_separation": 0.4})
    with pytest.raises(ParamsError, match="must divide by 4"):
        params({"latent_dims": [15, 8, 4, 3]})
    with pytest.raises(ParamsError, match="too few for an invertible map"):
        params({"latent_dims": [16, 8, 4, 7]})
    with pytest.raises(ParamsError, match="masking units of whole leaves"):
        params({"depth": 2, "latent_dims": [4, 2, 2], "noise_scales": [1.0, 1.0, 1.0]}, {"mask_units": [2, 4]})


# ----------------------------------------------------------------------------- the masked measures


def test_the_probe_masks_are_drawn_as_training_draws_them_and_fixed():
    masks = probe_masks(16, 4, 0.75, 3)
    assert masks.shape == (3, 16, 16) and (masks.reshape(3, 4, 4, 4, 4).all(axis=(2, 4)).sum(axis=(1, 2)) == 12).all()
    assert np.array_equal(masks, probe_masks(16, 4, 0.75, 3))
    keep = visible_token_index(masks[0], 2)
    assert len(keep) == 16 and (np.diff(keep) > 0).all()


def test_the_frontier_of_even_loss_runs_through_its_points_and_the_corners():
    scores = [{"c": [0.8, None], "v": [0.9, 0.5]}, {"c": [0.3, None], "v": [0.5, 0.2]}]
    front = frontier(scores)
    assert front[0] == [[0.0, 0.0], [0.5, 0.3], [0.9, 0.8], [1.0, 1.0]] and front[1] is None


@pytest.fixture(scope="module")
def oracle_cells():
    from mae_hlvm.synthetic.oracles import cell_table

    p = params({"image_size": 8, "depth": 2, "latent_dims": [4, 2, 2], "noise_scales": [1.0, 1.0, 1.0],
                "n_train": 1500, "n_test": 500, "n_classes": 3},
               {"mask_ratios": [0.25, 0.5, 0.75], "mask_units": [2], "seeds": [0]})
    ds = copytree.generate_dataset(p.data)
    variables = latent_variables(p.data)
    return {r: cell_table(p, ds, variables, r, 2)["encoders"] for r in (0.25, 0.5, 0.75)}


LOSSY_TOLERANCE = 0.1  # c_excess of a held-out lossy or untrained encoder on this small set, per cell


def test_the_measures_order_the_encoders_whose_answer_is_known(oracle_cells):
    defined = [r for r, enc in oracle_cells.items() if enc["c"]["c_excess"] is not None]
    assert len(defined) >= 2, "c_excess needs a level holding shared and visible-only latents"
    for ratio in defined:
        enc = oracle_cells[ratio]
        # the true c: all of c, and far more of it than even loss keeps
        assert enc["c"]["recovery"] > 0.95 and enc["c"]["c_excess"] > 0.8, ratio
        others = [v["c_excess"] for k, v in enc.items() if k != "c" and v["c_excess"] is not None]
        assert enc["c"]["c_excess"] > max(others) + 0.5
        # the pixels define the frontier; no held-out lossy encoder nor the untrained one keeps c beyond it
        # (keeping less of c than even loss, a negative excess, is no abstraction either)
        assert enc["pixels"]["c_excess"] == 0.0
        for name in ("proj6", "proj3", "random_init"):
            assert enc[name]["c_excess"] <= LOSSY_TOLERANCE, (ratio, name, enc[name]["c_excess"])
        # the level oracles hold their level and nothing beyond even loss
        for level in range(3):
            assert enc[f"level{level}"]["level"] == pytest.approx(level, abs=0.01)
            assert abs(enc[f"level{level}"]["c_excess"] or 0.0) < 0.05
        # the latents no visible pixel reaches are held by no encoder
        for name, scores in enc.items():
            assert all(h is None or h < 0.2 for h in scores["h"]), (ratio, name, scores["h"])


def test_the_retention_level_calls_loss_abstraction_which_is_why_no_claim_reads_it(oracle_cells):
    """The weighted level orders the level oracles but puts heavy noise above the pixels: a
    shared (copied) root part survives noise better than a leaf's own part."""
    for enc in oracle_cells.values():
        assert enc["pixels_snr0.25"]["level"] < enc["pixels"]["level"]
