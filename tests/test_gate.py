"""The learning gate's rules on hand-made curves and errors (mae_hlvm.gate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mae_hlvm import gate


# ------------------------------------------------------------------ plateau


def test_the_constants_are_the_documented_ones():
    assert (gate.GATE_MAX_REL, gate.PLATEAU_REL_DROP, gate.MIN_EPOCHS) == (0.97, 0.01, 4)


def test_a_flat_tail_is_a_plateau_and_a_falling_one_is_not():
    # 8 epochs: q = 2, last two vs the two before them
    flat = [1.0, 0.6, 0.4, 0.3, 0.25, 0.25, 0.249, 0.248]
    assert gate.loss_rel_drop(flat) == pytest.approx((0.25 - 0.2485) / 0.25)
    assert gate.plateau(flat) == (True, "ok")
    falling = [1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.26]  # (0.375 - 0.28) / 0.375
    ok, why = gate.plateau(falling)
    assert not ok and why.startswith("not plateaued (loss fell 25.3%")


def test_the_threshold_is_strict_at_one_percent():
    assert gate.plateau([1.0, 1.0, 1.0, 0.991])[0]  # 0.9 % drop: settled
    assert not gate.plateau([1.0, 1.0, 1.0, 0.99])[0]  # exactly 1 %: still improving
    assert gate.plateau([1.0, 1.0, 0.9, 0.95])[0], "a rising loss is not still improving"


def test_quarters_round_down_but_use_at_least_one_epoch():
    # 7 epochs: q = 1, so only the last epoch against the one before it counts
    assert gate.loss_rel_drop([9.0, 5.0, 3.0, 2.0, 1.5, 1.0, 1.0]) == 0.0
    # 12 epochs: q = 3
    curve = [5.0] * 6 + [2.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    assert gate.loss_rel_drop(curve) == pytest.approx(0.5)


@pytest.mark.parametrize("losses", [[], [0.5], [0.5, 0.4], [0.5, 0.4, 0.4]])
def test_short_curves_are_too_short_to_judge(losses):
    assert gate.loss_rel_drop(losses) is None
    assert gate.plateau(losses) == (False, "too few epochs to judge")


def test_a_non_finite_loss_is_not_a_plateau():
    ok, why = gate.plateau([1.0, 0.5, math.nan, 0.4])
    assert not ok and "not finite" in why


def test_history_losses_reads_the_checkpoint_history_in_epoch_order():
    history = [{"epoch": 1, "loss": 0.5, "lr": 0.0}, {"epoch": 0, "loss": 0.9, "lr": 1e-3}]
    assert gate.history_losses(history) == [0.9, 0.5]
    with pytest.raises(ValueError, match="history"):
        gate.history_losses([{"epoch": 0}])
    with pytest.raises(ValueError, match="history"):
        gate.history_losses(None)


# ------------------------------------------------------------------ learned and the whole gate

SETTLED = [1.0, 0.5, 0.3, 0.3]


def test_a_converged_high_ratio_cell_passes():
    # the numbers at ratio 0.9: 0.128 vs 0.137, rel 0.934
    g = gate.evaluate_gate(0.128, 0.137, SETTLED)
    assert g["recon_rel"] == pytest.approx(0.934307, abs=1e-6)
    assert g["learned"] and g["plateau"] and g["gate_pass"] and g["gate_reason"] == "ok"
    assert g["rules"] == {"gate_max_rel": 0.97, "plateau_rel_drop": 0.01, "min_epochs": 4}


def test_the_mean_predictor_must_be_beaten_by_three_percent():
    assert not gate.evaluate_gate(0.97, 1.0, SETTLED)["learned"]
    assert gate.evaluate_gate(0.969, 1.0, SETTLED)["learned"]
    g = gate.evaluate_gate(1.02, 1.0, SETTLED)
    assert not g["gate_pass"] and g["gate_reason"] == "not learned (recon_rel 1.020 >= 0.97)"


def test_every_failure_is_named():
    g = gate.evaluate_gate(1.0, 1.0, [0.9, 0.5])
    assert not g["learned"] and not g["plateau"] and not g["gate_pass"]
    assert g["gate_reason"] == "not learned (recon_rel 1.000 >= 0.97); too few epochs to judge"
    assert g["loss_rel_drop"] is None
    g = gate.evaluate_gate(math.nan, 1.0, SETTLED)
    assert g["recon_mse"] is None and g["recon_rel"] is None and not g["learned"]


def test_gate_line_counts_and_names_failing_cells():
    assert gate.gate_line("synthetic grid", 3, []) == "Learning gate, synthetic grid: 3 of 3 cells pass."
    line = gate.gate_line("real track", 4, [("A/r0.9_p8_s0", "too few epochs to judge")])
    assert line == "Learning gate, real track: 3 of 4 cells pass; failing: A/r0.9_p8_s0 (too few epochs to judge)."
    assert gate.flag_reason(0.99, True) == "not learned (recon_rel 0.990)"
    assert gate.flag_reason(0.5, False) == "not plateaued"
    assert gate.flag_reason(math.nan, False) == "not learned; not plateaued"


# ------------------------------------------------------------------ the errors


def test_hidden_errors_count_only_hidden_tokens_for_both_predictors():
    target = torch.zeros(2, 3, 4)
    pix = torch.ones(2, 3, 4)  # error 1 per value
    mean = torch.full((1, 3, 4), 2.0)  # error 4 per value
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    mae, mean_err, count = gate.hidden_sq_errors(pix, target, mean, mask)
    assert (mae, mean_err, count) == (12.0, 48.0, 12)


def test_train_mean_image_is_the_per_position_mean():
    images = np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2)
    out = gate.train_mean_image(images)
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    assert np.array_equal(out, np.array([[[2.0, 3.0], [4.0, 5.0]]], dtype=np.float32))
