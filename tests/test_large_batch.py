"""Large batch for real: the gathered objectives see every sample of the optimiser step (global negatives
across gradient accumulation), every mean is over the global set, and the optimiser follows the global batch.

The end-to-end runs train the real pre-training task (packaged MiniLM BERT, test_resnet with frozen BatchNorm,
learned temperature; contrastive + LVWM + masked tokens + level 2 with hard negatives + VTM with hard
negatives) on synthetic samples whose content and masks follow each sample, through the real engine and
trainer (tests/large_batch_run.py). AdamW runs with eps 1e-5 here: Adam divides each gradient by its own
running magnitude, so parameters whose true gradient is ~0 (an attention key bias, the level-2 output bias:
those losses are invariant to them) would otherwise turn float rounding into full-size steps.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from launching import deepspeed_cmd, run_ok
from snps3_ds.config import ConfigError, OptimConfig
from snps3_ds.engine.ds_config import EngineSettings, check_optimizer_block
from snps3_ds.engine.optim import build_optimizer, for_global_batch, lr_lambda
from snps3_ds.objectives.contrastive import GlobalContrastiveLoss
from snps3_ds.objectives.moco import MomentumContrast
from snps3_ds.processes import free_port

SCRIPT = "tests/large_batch_run.py"
EPS = "1e-5"
TOL = 1e-5


def _ds_config(path: Path, micro: int, accum: int, stage: int) -> Path:
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum,
                                "gradient_clipping": 1.0, "zero_optimization": {"stage": stage},
                                "steps_per_print": 10**6}))
    return path


def _torch_run(tmp: Path, name: str, micro: int, accum: int, *args: str) -> Path:
    out = tmp / name / "params.pt"
    run_ok([sys.executable, SCRIPT, "--engine", "torch", "--ds_config", str(_ds_config(tmp / f"{name}.json", micro,
           accum, 0)), "--eps", EPS, "--out", str(out), *args])
    return out


def _zero2_run(tmp: Path, name: str, *args: str) -> Path:
    out = tmp / name / "params.pt"
    run_ok(deepspeed_cmd(2, SCRIPT, "--ds_config", str(_ds_config(tmp / f"{name}.json", 4, 2, 2)), "--eps", EPS,
                         "--out", str(out), *args))
    return out


def _largest_difference(a: Path, b: Path) -> tuple[float, str]:
    got, want = torch.load(a), torch.load(b)
    assert got.keys() == want.keys()
    return max(((got[k] - want[k]).abs().max().item(), k) for k in want if want[k].is_floating_point())


def _losses(params: Path) -> list[float]:
    return json.loads((params.parent / "losses.json").read_text())


@pytest.mark.slow
def test_large_batch_accumulation_zero2_two_ranks_global_negatives_equal_one_batch_of_16(tmp_path: Path) -> None:
    """2 ranks x micro 4 x accumulation 2 (ZeRO-2, fp32) with global negatives end where one process with
    batch 16 ends (4 optimiser steps, dropout off: one batch of 16 and micro-batches of 4 cannot draw the same
    dropout masks); the same run with per-micro-batch negatives does not."""
    reference = _torch_run(tmp_path, "batch16", 16, 1)
    step = _zero2_run(tmp_path, "zero2_step", "--negatives", "step")
    micro = _zero2_run(tmp_path, "zero2_micro", "--negatives", "micro")
    difference, name = _largest_difference(step, reference)
    assert difference < TOL, f"global negatives: {name} differs by {difference:.3g}"
    assert _losses(step) == pytest.approx(_losses(reference), rel=1e-6)
    difference_micro, name_micro = _largest_difference(micro, reference)
    print(f"largest parameter difference to batch 16: global negatives {difference:.2e} ({name}); per-micro-batch "
          f"negatives {difference_micro:.2e} ({name_micro}); step losses {_losses(step)} vs {_losses(micro)}")
    assert difference_micro > 100 * TOL, "per-micro-batch negatives should not reproduce the batch of 16"
    assert _losses(micro)[0] < _losses(reference)[0] - 0.5  # 8 negatives per query instead of 16: a lower loss


@pytest.mark.slow
def test_large_batch_dropout_on_replays_the_first_pass_on_any_rank_layout(tmp_path: Path) -> None:
    """Dropout on: 2 ranks x micro 4 x accumulation 2 equal 1 rank x micro 4 x accumulation 4 (the same
    micro-batches, the same seeds per global micro-batch): the second pass repeats the first one's dropout,
    else the cached gradients would not be those of the loss it computed."""
    one_rank = _torch_run(tmp_path, "one_rank", 4, 4, "--negatives", "step", "--dropout", "0.1")
    two_ranks = _zero2_run(tmp_path, "two_ranks", "--negatives", "step", "--dropout", "0.1")
    difference, name = _largest_difference(two_ranks, one_rank)
    assert difference < TOL, f"{name} differs by {difference:.3g}"
    assert _losses(two_ranks) == pytest.approx(_losses(one_rank), rel=1e-6)


# --- global normalisation: ranks with unequal numbers of real clips ---------------------------------------

def _features(rank: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 samples: rank 0 holds 2 images (one real clip of 3), rank 1 holds 2 videos (3 real clips)."""
    gen = torch.Generator().manual_seed(7)
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen, dtype=torch.float64), dim=-1)
    clips = torch.nn.functional.normalize(torch.randn(4, 3, 8, generator=gen, dtype=torch.float64), dim=-1)
    mask = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    rows = slice(None) if rank is None else slice(2 * rank, 2 * rank + 2)
    return text[rows].clone().requires_grad_(), clips[rows].clone().requires_grad_(), mask[rows]


def _moco(world: int, rank: int) -> MomentumContrast:
    towers = {"a": torch.nn.Linear(1, 1)}
    return MomentumContrast(towers, dim=8, queue_size=6, momentum=0.99, rank=rank, world_size=world).double()


def _keys(rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(8)
    text = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    clips = torch.randn(4, 3, 8, generator=gen, dtype=torch.float64)
    rows = slice(None) if rank is None else slice(2 * rank, 2 * rank + 2)
    return text[rows], clips[rows]


def _losses_and_grads(rank: int | None, world: int) -> dict:
    out = {}
    for name in ("contrastive", "moco"):
        text, clips, mask = _features(rank)
        if name == "contrastive":
            loss = GlobalContrastiveLoss(0.1, rank or 0, world)(text, clips, mask).loss
        else:
            loss = _moco(world, rank or 0).loss(text, clips, mask, _keys(rank), 0.1)
        grads = torch.autograd.grad(loss, (text, clips))
        out[name] = (float(loss.detach()), [g / world for g in grads])  # / world: the engine's mean over ranks
    return out


def _unequal_worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results[rank] = _losses_and_grads(rank, world)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["contrastive", "moco"])
def test_large_batch_unequal_real_clips_give_the_full_batch_loss_and_gradients(objective: str) -> None:
    results = mp.Manager().dict()
    mp.spawn(_unequal_worker, args=(2, free_port(), results), nprocs=2, join=True)
    full = _losses_and_grads(None, 1)[objective]
    ranks = [results[r][objective] for r in (0, 1)]
    assert (ranks[0][0] + ranks[1][0]) / 2 == pytest.approx(full[0], abs=1e-6)
    for i, want in enumerate(full[1]):
        torch.testing.assert_close(torch.cat([ranks[0][1][i], ranks[1][1][i]]), want, rtol=0, atol=1e-6)


# --- large-batch optimisation ---------------------------------------------------------------------------

def test_large_batch_learning_rate_scaling_and_warmup_in_samples() -> None:
    cfg = OptimConfig(lr=1e-4, visual_lr=2e-4, head_lr=1e-3, lr_scaling="sqrt", reference_batch=256,
                      warmup_samples=10_000)
    scaled, line = for_global_batch(cfg, 1024)
    assert (scaled.lr, scaled.visual_lr, scaled.head_lr) == pytest.approx((2e-4, 4e-4, 2e-3))
    assert scaled.warmup_steps == 10  # ceil(10000 / 1024)
    assert "sqrt scaling x2" in line and "global batch 1024 vs reference 256" in line and "10000 samples" in line
    linear, _ = for_global_batch(OptimConfig(lr=1e-4, lr_scaling="linear", reference_batch=256, warmup_steps=7), 64)
    assert linear.lr == pytest.approx(2.5e-5) and linear.warmup_steps == 7
    same, _ = for_global_batch(OptimConfig(lr=1e-4), 4096)
    assert same.lr == 1e-4
    assert lr_lambda(scaled, 100)(4) == pytest.approx(0.5)  # step 5 of a 10-step warm-up


def test_large_batch_lamb_is_an_optimiser_choice() -> None:
    from timm.optim import Lamb

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = build_optimizer(model, OptimConfig(name="lamb", lr=1e-2, eps=1e-6), set())
    assert isinstance(optimizer, Lamb) and all(g["eps"] == 1e-6 for g in optimizer.param_groups)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(3, 4)).pow(2).sum().backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _settings(raw: dict) -> EngineSettings:
    return EngineSettings("ds.json", raw, 4, 1, "fp32", 1.0, 2)


def test_large_batch_ds_config_optimizer_block_must_agree_with_the_recipe() -> None:
    agree = {"optimizer": {"type": "AdamW", "params": {"lr": 5e-5, "betas": [0.9, 0.98], "weight_decay": 1e-3}}}
    check_optimizer_block(_settings(agree), OptimConfig(), "recipe.yaml")
    disagree = {"optimizer": {"type": "Lamb", "params": {"lr": 1e-3}}}
    with pytest.raises(ConfigError, match=r"ds.json and recipe.yaml disagree.*type is 'lamb' but the recipe's "
                                          r"optim.name is 'adamw'.*params.lr is 0.001 but the recipe's optim.lr"):
        check_optimizer_block(_settings(disagree), OptimConfig(), "recipe.yaml")
    with pytest.raises(ConfigError, match="remove the `scheduler` block"):
        check_optimizer_block(_settings({"scheduler": {"type": "WarmupLR"}}), OptimConfig(), "recipe.yaml")
