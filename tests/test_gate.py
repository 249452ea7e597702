"""The learning gate's rules on hand-made curves and errors (mae_hlvm.core.gate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mae_hlvm.core import gate
from mae_hlvm.core.measures import hidden_sq_errors

# ------------------------------------------------------------------ the last quarter's loss drop (a diagnostic)


def test_the_constants_are_the_documented_ones():
    assert (gate.GATE_MIN_SHARE, gate.LINEAR_MIN_GAIN_REL, gate.MIN_EPOCHS) == (0.5, 1e-6, 4)
    assert (gate.LINEAR_REF_MASKS, gate.LINEAR_REF_SEED) == (4, 20230606)
    assert not hasattr(gate, "GATE_MAX_REL") and not hasattr(gate, "PLATEAU_REL_DROP") and not hasattr(gate, "plateau")


def test_the_last_quarter_drop_compares_the_last_quarter_with_the_one_before():
    # 8 epochs: q = 2, last two vs the two before them
    flat = [1.0, 0.6, 0.4, 0.3, 0.25, 0.25, 0.249, 0.248]
    assert gate.loss_rel_drop(flat) == pytest.approx((0.25 - 0.2485) / 0.25)
    falling = [1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.26]
    assert gate.loss_rel_drop(falling) == pytest.approx((0.375 - 0.28) / 0.375)
    assert gate.loss_rel_drop([1.0, 1.0, 0.9, 0.95]) == pytest.approx(-0.95 / 0.9 + 1), "a rising loss: negative"


def test_quarters_round_down_but_use_at_least_one_epoch():
    # 7 epochs: q = 1, so only the last epoch against the one before it counts
    assert gate.loss_rel_drop([9.0, 5.0, 3.0, 2.0, 1.5, 1.0, 1.0]) == 0.0
    # 12 epochs: q = 3
    curve = [5.0] * 6 + [2.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    assert gate.loss_rel_drop(curve) == pytest.approx(0.5)


@pytest.mark.parametrize("losses", [[], [0.5], [0.5, 0.4], [0.5, 0.4, 0.4]])
def test_short_curves_have_no_drop(losses):
    assert gate.loss_rel_drop(losses) is None


def test_a_non_finite_loss_has_no_finite_drop():
    assert math.isnan(gate.loss_rel_drop([1.0, 0.5, math.nan, 0.4]))


def test_history_losses_reads_the_checkpoint_history_in_epoch_order():
    history = [{"epoch": 1, "loss": 0.5, "lr": 0.0}, {"epoch": 0, "loss": 0.9, "lr": 1e-3}]
    assert gate.history_losses(history) == [0.9, 0.5]
    with pytest.raises(ValueError, match="history"):
        gate.history_losses([{"epoch": 0}])
    with pytest.raises(ValueError, match="history"):
        gate.history_losses(None)


# ------------------------------------------------------------------ learned and the whole gate

SETTLED = [1.0, 0.5, 0.3, 0.3]
RULES = {"gate_min_share": 0.5, "linear_min_gain_rel": 1e-6, "linear_ref_masks": 4, "linear_ref_seed": 20230606,
         "min_epochs": 4}


def test_the_mae_must_achieve_half_of_the_linear_predictors_gain():
    # mean predictor 0.14, linear 0.12: the reference gain is 0.02; the MAE at 0.128 gets 0.012 of it
    g = gate.evaluate_gate(0.128, 0.14, 0.12, SETTLED)
    assert (g["recon_rel"], g["linear_rel"], g["gain_share"]) == (0.914286, 0.857143, 0.6)
    assert g["learned"] and g["gate_pass"] and g["gate_reason"] == "ok" and "plateau" not in g
    assert g["last_quarter_drop"] == 0.0
    assert g["learned_rule"] == "gain_share" and g["linear_mse"] == 0.12
    assert g["rules"] == RULES
    # exactly half passes, just under half does not
    assert gate.evaluate_gate(0.13, 0.14, 0.12, SETTLED)["gain_share"] == 0.5
    assert gate.evaluate_gate(0.13, 0.14, 0.12, SETTLED)["learned"]
    g = gate.evaluate_gate(0.1301, 0.14, 0.12, SETTLED)
    assert g["gain_share"] == 0.495 and not g["learned"] and not g["gate_pass"]
    assert g["gate_reason"] == "not learned (gain share 0.49 < 0.5 of the linear predictor's)"


def test_the_same_error_ratio_passes_where_little_is_achievable_and_fails_where_much_is():
    # recon_rel 0.98 everywhere: near the linear predictor at rel 0.99 (unit 4, ratio 0.9), far from it at 0.8
    hard = gate.evaluate_gate(0.98, 1.0, 0.99, SETTLED)
    easy = gate.evaluate_gate(0.98, 1.0, 0.80, SETTLED)
    assert hard["recon_rel"] == easy["recon_rel"] == 0.98
    assert hard["gain_share"] == 2.0 and hard["gate_pass"], "beating the linear predictor is more than enough"
    assert easy["gain_share"] == 0.1 and not easy["learned"]
    assert easy["gate_reason"] == "not learned (gain share 0.10 < 0.5 of the linear predictor's)"


def test_a_mae_worse_than_the_mean_predictor_has_a_negative_share():
    g = gate.evaluate_gate(1.02, 1.0, 0.9, SETTLED)
    assert g["gain_share"] == -0.2 and not g["gate_pass"]
    assert g["gate_reason"] == "not learned (gain share -0.20 < 0.5 of the linear predictor's)"


def test_without_a_linear_gain_the_mae_need_only_beat_the_mean_predictor():
    for linear in (1.0, 1.01, 1.0 - 5e-7):  # no gain, worse, a gain within the tolerance (1e-6 of the mean's)
        assert not gate.has_linear_gain(1.0, linear)
        g = gate.evaluate_gate(0.99, 1.0, linear, SETTLED)
        assert g["gain_share"] is None and g["learned"] and g["gate_pass"]
        assert g["learned_rule"].startswith("recon_mse < mean_pred_mse")
        assert g["gate_reason"] == "ok (fallback rule: the linear predictor does not beat the mean predictor)"
    assert gate.has_linear_gain(1.0, 1.0 - 2e-6)
    g = gate.evaluate_gate(1.0, 1.0, 1.0, SETTLED)
    assert not g["learned"] and g["gate_reason"] == (
        "not learned (recon_rel 1.000 >= 1; fallback rule: the linear predictor does not beat the mean predictor)"
    )
    g = gate.evaluate_gate(0.99, 1.0, math.nan, SETTLED)  # no linear reference at all: the same fallback
    assert g["linear_mse"] is None and g["linear_rel"] is None and g["gain_share"] is None and g["learned"]


def test_every_failure_is_named_and_the_loss_drop_never_decides():
    g = gate.evaluate_gate(1.0, 1.0, 0.9, [0.9, 0.5])
    assert not g["learned"] and not g["gate_pass"]
    assert g["gate_reason"] == "not learned (gain share 0.00 < 0.5 of the linear predictor's)"
    assert g["last_quarter_drop"] is None
    g = gate.evaluate_gate(math.nan, 1.0, 0.9, SETTLED)
    assert g["recon_mse"] is None and g["recon_rel"] is None and g["gain_share"] is None and not g["learned"]
    assert g["gate_reason"] == "not learned (no finite reconstruction error ratio)"
    # a cell still falling fast, or with one epoch, passes when it learned: the gate reads learning only
    for losses in ([0.5], [1.0, 0.8, 0.6, 0.3]):
        g = gate.evaluate_gate(0.1, 0.14, 0.12, losses)
        assert g["learned"] and g["gate_pass"] and g["gate_reason"] == "ok"
    assert gate.evaluate_gate(0.1, 0.14, 0.12, [1.0, 0.8, 0.6, 0.3])["last_quarter_drop"] == 0.5


def test_the_json_agrees_with_itself():
    g = gate.evaluate_gate(0.1234567, 0.1398765, 0.1287654, SETTLED)
    share = (g["mean_pred_mse"] - g["recon_mse"]) / (g["mean_pred_mse"] - g["linear_mse"])
    assert g["gain_share"] == round(share, 6) and g["learned"] == (g["gain_share"] >= 0.5)
    assert g["linear_rel"] == round(g["linear_mse"] / g["mean_pred_mse"], 6)


def test_gate_line_counts_and_names_failing_cells():
    assert gate.gate_line("synthetic grid", 3, []) == "Learning gate, synthetic grid: 3 of 3 cells pass."
    line = gate.gate_line("real track", 4, [("A/r0.9_u8_s0", "not learned")])
    assert line == "Learning gate, real track: 3 of 4 cells pass; failing: A/r0.9_u8_s0 (not learned)."


def test_flag_reason_reads_the_share_and_the_fallback_from_table_columns():
    assert gate.flag_reason(0.12, 0.95) == "not learned (gain share 0.12 < 0.5 of the linear predictor's)"
    assert gate.flag_reason(0.6, 0.9) == "ok"
    # no share but a finite ratio: the fallback rule judged the cell
    assert gate.flag_reason(math.nan, 1.02) == (
        "not learned (recon_rel 1.020 >= 1; fallback rule: the linear predictor does not beat the mean predictor)"
    )
    assert gate.flag_reason(math.nan, 0.99) == "ok"
    assert gate.flag_reason(math.nan, math.nan) == "not learned (no finite reconstruction error ratio)"
    # the table's columns give the same verdict as the gate object, and learned_from the same flag
    for args in [(0.128, 0.14, 0.12), (0.1301, 0.14, 0.12), (0.99, 1.0, 1.0), (1.0, 1.0, 1.0)]:
        g = gate.evaluate_gate(*args, SETTLED)
        share = math.nan if g["gain_share"] is None else g["gain_share"]
        assert (gate.flag_reason(share, g["recon_rel"]) == "ok") == g["learned"] == gate.learned_from(share, g["recon_rel"])


# ------------------------------------------------------------------ the linear reference


def _mean_pred_on_reference_masks(train, test, unit, ratio, n_masks=gate.LINEAR_REF_MASKS, seed=gate.LINEAR_REF_SEED):
    """The mean predictor's hidden-pixel MSE on the linear reference's own masks."""
    from mae_hlvm.core.masks import draw_masks

    sq = (test.astype(np.float64) - gate.train_mean_image(train)) ** 2
    masks = draw_masks(train.shape[-1], unit, ratio, n_masks, seed)
    return float(np.mean([sq[:, :, m].mean() for m in masks]))


def test_hidden_pixels_that_are_linear_in_the_visible_ones_are_predicted_exactly():
    # every image is a linear map of 5 latents: any 5+ visible values determine the rest
    rng = np.random.default_rng(0)
    images = ((rng.standard_normal((700, 5)) @ rng.standard_normal((5, 2 * 8 * 8))).reshape(700, 2, 8, 8) + 3.0)
    images = images.astype(np.float32)
    train, test = images[:500], images[500:]
    for unit, ratio in [(2, 0.5), (4, 0.75)]:
        mean_pred = _mean_pred_on_reference_masks(train, test, unit, ratio)
        linear = gate.linear_reference(train, test, unit, ratio)[0]
        assert mean_pred > 1.0 and linear < 1e-6 * mean_pred


def test_independent_noise_pixels_leave_the_linear_predictor_at_the_mean_predictor():
    rng = np.random.default_rng(1)
    centre = rng.standard_normal((3, 8, 8))
    images = (centre + 0.5 * rng.standard_normal((2500, 3, 8, 8))).astype(np.float32)
    train, test = images[:2000], images[2000:]
    linear = gate.linear_reference(train, test, 2, 0.5)[0]
    mean_pred = _mean_pred_on_reference_masks(train, test, 2, 0.5)
    assert mean_pred == pytest.approx(0.25, rel=0.03)
    assert linear == pytest.approx(mean_pred, rel=0.01)  # nothing to learn: ridge falls back to the intercept


def test_the_linear_reference_is_one_ridge_per_mae_mask_over_every_channel():
    from mae_hlvm.core.linear import ridge_fit_predict
    from mae_hlvm.core.masks import draw_masks

    rng = np.random.default_rng(2)
    images = np.cumsum(rng.standard_normal((600, 2, 8, 8)), axis=3).astype(np.float32)  # smooth along rows
    train, test = images[:450], images[450:]
    # by hand: the MAE's masks (draw_masks), visible -> hidden values of both channels, one ridge per mask
    masks = draw_masks(8, 2, 0.5, 2, seed=7)
    sq, count = 0.0, 0
    for hidden in masks:
        x_tr, y_tr = train[:, :, ~hidden].reshape(450, -1), train[:, :, hidden].reshape(450, -1)
        x_te, y_te = test[:, :, ~hidden].reshape(150, -1), test[:, :, hidden].reshape(150, -1)
        (pred,) = ridge_fit_predict(x_tr.astype(np.float64), [y_tr.astype(np.float64)], x_te.astype(np.float64))
        sq, count = sq + float(((pred - y_te) ** 2).sum()), count + y_te.size
    assert gate.linear_reference(train, test, 2, 0.5, n_masks=2, seed=7)[0] == pytest.approx(sq / count, rel=1e-12)
    assert 0 < sq / count < 0.75 * _mean_pred_on_reference_masks(train, test, 2, 0.5, n_masks=2, seed=7)
    # deterministic; another seed, other masks
    assert gate.linear_reference(train, test, 2, 0.5)[0] == gate.linear_reference(train, test, 2, 0.5)[0]
    assert gate.linear_reference(train, test, 2, 0.5, seed=8)[0] != gate.linear_reference(train, test, 2, 0.5)[0]


def test_a_mask_hides_a_pixel_in_every_channel():
    # channel 1 copies channel 0 of noise images: were a pixel hidden in one channel only,
    # its copy would give it away; hidden in both, nothing predicts it
    rng = np.random.default_rng(3)
    one = rng.standard_normal((900, 1, 8, 8)).astype(np.float32)
    two = np.concatenate([one, one], axis=1)
    linear = gate.linear_reference(two[:700], two[700:], 4, 0.5)[0]
    assert linear == pytest.approx(_mean_pred_on_reference_masks(two[:700], two[700:], 4, 0.5), rel=0.02)


def test_the_linear_reference_rejects_what_it_cannot_fit():
    images = np.zeros((10, 1, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 4 train images"):
        gate.linear_reference(images[:3], images[3:], 4, 0.5)[0]
    with pytest.raises(ValueError, match="one size"):
        gate.linear_reference(images, np.zeros((2, 1, 4, 4), dtype=np.float32), 4, 0.5)


# ------------------------------------------------------------------ the errors


def test_hidden_errors_count_only_hidden_tokens_for_both_predictors():
    target = torch.zeros(2, 3, 4)
    pix = torch.ones(2, 3, 4)  # error 1 per value
    mean = torch.full((1, 3, 4), 2.0)  # error 4 per value
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    mae, mean_err, count = hidden_sq_errors(pix, target, mean, mask)
    assert (mae, mean_err, count) == (12.0, 48.0, 12)


def test_train_mean_image_is_the_per_position_mean():
    images = np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2)
    out = gate.train_mean_image(images)
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    assert np.array_equal(out, np.array([[[2.0, 3.0], [4.0, 5.0]]], dtype=np.float32))
