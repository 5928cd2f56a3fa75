import math

import mlx.core as mx
import numpy as np
import pytest
from helpers import tiny_batch, tiny_hjepa, tiny_schedules, tiny_step
from mlx.utils import tree_flatten


def flat(params):
    return {k: np.array(v) for k, v in tree_flatten(params)}


def test_one_step_updates_context_and_moves_target_by_ema_only():
    model = tiny_hjepa()
    step = tiny_step(model)
    images, masks = tiny_batch(model)
    ctx_before, pred_before = flat(model.encoder.parameters()), flat(model.predictor.parameters())
    tgt_before = flat(model.target_encoder.parameters())
    out = step(images, masks)
    mx.eval(out)
    m = out["ema_momentum"].item()
    assert m == pytest.approx(0.996)
    ctx_after, tgt_after = flat(model.encoder.parameters()), flat(model.target_encoder.parameters())
    changed = [k for k in ctx_after if not np.array_equal(ctx_after[k], ctx_before[k])]
    assert len(changed) == len(ctx_after)
    pred_after = flat(model.predictor.parameters())
    assert any(not np.array_equal(pred_after[k], pred_before[k]) for k in pred_after)
    for k in tgt_after:
        np.testing.assert_allclose(tgt_after[k], m * tgt_before[k] + (1 - m) * ctx_after[k], atol=1e-6, rtol=0)


def test_no_gradient_reaches_the_target():
    model = tiny_hjepa()
    step = tiny_step(model)
    images, masks = tiny_batch(model)
    grads, _ = step._grads(mx.array(images), {k: mx.array(v) for k, v in masks.items() if "boxes" not in k})
    assert "target_encoder" not in flat(grads) and not any(k.startswith("target_encoder") for k in flat(grads))
    assert any(np.abs(g).sum() > 0 for k, g in flat(grads).items() if k.startswith("encoder."))


def reference_schedules(s, t):
    if t < s.warmup_steps:
        lr = s.warmup_lr + (s.lr - s.warmup_lr) * t / s.warmup_steps
    else:
        p = (t - s.warmup_steps) / (s.total_steps - s.warmup_steps)
        lr = s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * p))
    wd = s.weight_decay_end + 0.5 * (s.weight_decay - s.weight_decay_end) * (1 + math.cos(math.pi * t / s.total_steps))
    ema = s.ema_start + (s.ema_end - s.ema_start) * min(t / s.ema_steps, 1.0)
    return lr, wd, ema


def test_schedules_inside_the_compiled_step_follow_their_formulas():
    model = tiny_hjepa()
    sched = tiny_schedules(total_steps=8, warmup_steps=3, ema_steps=6)
    step = tiny_step(model, sched)
    images, masks = tiny_batch(model)
    seen = []
    for _ in range(8):
        out = step(images, masks)
        seen.append((out["lr"].item(), out["weight_decay"].item(), out["ema_momentum"].item()))
    assert step.trace_count == 1  # one trace, yet the values move: they are not constants
    assert seen[0][0] == pytest.approx(sched.warmup_lr)
    for t, values in enumerate(seen):
        np.testing.assert_allclose(values, reference_schedules(sched, t), rtol=1e-5)
    assert step.step == 8


def test_loss_on_a_fixed_batch_halves_within_50_steps():
    model = tiny_hjepa()
    step = tiny_step(model, tiny_schedules(total_steps=50))
    images, masks = tiny_batch(model)
    losses = [step(images, masks)["loss"].item() for _ in range(50)]
    assert min(losses[-5:]) < 0.5 * losses[0]


def test_trace_count_is_bounded_by_distinct_mask_shapes():
    model = tiny_hjepa()
    step = tiny_step(model)
    shapes = set()
    for i in range(12):
        images, masks = tiny_batch(model, batch_index=i)
        shapes.add((masks["context"].shape, masks["targets"].shape))
        step(images, masks)
    assert step.trace_count == len(shapes)


def test_accumulating_identical_micro_batches_equals_one_step():
    images, masks = tiny_batch(tiny_hjepa())
    fused_model, accum_model = tiny_hjepa(seed=3), tiny_hjepa(seed=3)
    tiny_step(fused_model)(images, masks)
    accum = tiny_step(accum_model, accumulation_steps=2)
    first = accum(images, masks)
    assert "lr" not in first and accum.step == 0  # no update after the first micro-batch
    second = accum(images, masks)
    assert "lr" in second and accum.step == 1
    a, b = flat(fused_model.parameters()), flat(accum_model.parameters())
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=2e-6, rtol=1e-5)


def test_clipping_reports_the_unclipped_norm_and_changes_the_update():
    batches = [tiny_batch(tiny_hjepa(), batch_index=i) for i in range(2)]

    def train(**options):
        model = tiny_hjepa(seed=4)
        step = tiny_step(model, **options)
        norms = [step(*batch)["grad_norm"].item() for batch in batches]
        return flat(model.parameters()), norms

    plain, plain_norms = train()
    loose, loose_norms = train(clip_grad=1e9)
    tight, tight_norms = train(clip_grad=1e-3)
    assert tight_norms[0] == pytest.approx(plain_norms[0], rel=1e-4) and tight_norms[0] > 1e-3
    assert all(np.array_equal(plain[k], loose[k]) for k in plain)  # a clip never reached changes nothing
    assert any(not np.allclose(plain[k], tight[k]) for k in plain)  # per-step rescaling moves Adam's moments


def test_bf16_compute_keeps_fp32_master_weights():
    model = tiny_hjepa()
    step = tiny_step(model, bf16=True)
    images, masks = tiny_batch(model)
    losses = [step(images, masks)["loss"].item() for _ in range(3)]
    assert all(np.isfinite(losses))
    dtypes = {v.dtype for _, v in tree_flatten(model.parameters())}
    assert dtypes == {mx.float32}


def test_hierarchy_weights_must_match_levels():
    with pytest.raises(ValueError, match="one weight per level"):
        tiny_step(tiny_hjepa(num_hierarchies=2), hierarchy_weights=(1.0, 0.5, 0.25))


def test_vicreg_terms_are_returned_unweighted_from_the_compiled_step():
    weights = dict(variance_weight=0.5, covariance_weight=0.04)
    plain, regularised = tiny_step(tiny_hjepa()), tiny_step(tiny_hjepa(), **weights)
    images, masks = tiny_batch(plain.model)
    without, out = plain(images, masks), regularised(images, masks)
    assert "variance" not in without and "covariance" not in without
    variance, covariance = out["variance"].item(), out["covariance"].item()
    assert variance > 0 and covariance > 0
    # the loss is the same model's prediction loss plus the weighted terms the step reports
    expected = without["loss"].item() + weights["variance_weight"] * variance + weights["covariance_weight"] * covariance
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    regularised(images, masks)  # same shapes: no new trace, and the state is still captured
    assert regularised.trace_count == 1 and regularised.step == 2


def test_level_target_key_reaches_the_compiled_step():
    """loss.level_target goes from the config to the step and changes only the coarser levels' loss."""
    from mlx_hjepa.config import load_config
    from mlx_hjepa.train.step import StepOptions

    cfg = load_config({"data": {"dataset": "synthetic"}, "loss": {"level_target": "mean_of_norm"}})
    assert StepOptions.from_config(cfg).level_target == "mean_of_norm"
    default, matched = tiny_step(tiny_hjepa()), tiny_step(tiny_hjepa(), level_target="mean_of_norm")
    images, masks = tiny_batch(default.model)
    a, b = np.array(default(images, masks)["level_losses"]), np.array(matched(images, masks)["level_losses"])
    assert a[0] == pytest.approx(b[0], rel=1e-6) and abs(a[1] - b[1]) > 1e-4 * abs(a[1])
