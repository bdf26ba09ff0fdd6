"""Elastic resume: a ZeRO-2 run continues on another number of ranks with its optimiser state and its sample
stream. 2 ranks train 6 steps, 1 rank the next 4 (accumulation 2 keeps the global batch 8), 2 ranks the last 4;
every step's global batch equals the uninterrupted 2-rank run's, and the Adam moments and step counts right
after each reload equal those saved. Select with `pytest -k elastic`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from launching import deepspeed_cmd, global_batches, pretrain_args, read_jsonl, run_ok

STEPS = 14
LEGS = [(2, 6), (1, 10), (2, STEPS)]  # (ranks, last step of the leg)


def _worlds(legs: list[tuple[int, int]]) -> dict[int, int]:
    """step -> the number of ranks that ran it."""
    worlds, first = {}, 1
    for ranks, last in legs:
        worlds.update({step: ranks for step in range(first, last + 1)})
        first = last + 1
    return worlds


@pytest.fixture(scope="module")
def elastic_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The three legs in one run folder, and what each printed."""
    run_dir = tmp_path_factory.mktemp("elastic") / "run"
    return run_dir, _run_legs(tiny_corpus, run_dir)


def _run_legs(corpus: Path, run_dir: Path) -> list[str]:
    outs = []
    for i, (ranks, last) in enumerate(LEGS):
        extra = [f"train.max_steps={STEPS}", f"train.stop_after_step={last}", "train.audit_optimizer_state=true"]
        extra += ["--resume", "auto"] if i else []
        outs.append(run_ok(deepspeed_cmd(ranks, "launch/pretrain.py", *pretrain_args(corpus, run_dir, *extra)),
                           OMP_NUM_THREADS="1"))
    return outs


def _assert_restored(audit: Path, tag: str, saved_by: int, loaded_by: int) -> None:
    saved = torch.load(audit / f"{tag}_saved_world{saved_by}.pt", weights_only=True)
    loaded = torch.load(audit / f"{tag}_loaded_world{loaded_by}.pt", weights_only=True)
    assert saved["steps"] == loaded["steps"] and saved["global_steps"] == loaded["global_steps"], (saved["steps"],
                                                                                                   loaded["steps"])
    assert saved["params"].keys() == loaded["params"].keys()
    for name, states in saved["params"].items():
        assert set(states) == {"fp32", "exp_avg", "exp_avg_sq"}, name
        for key, value in states.items():
            worst = (value - loaded["params"][name][key]).abs().max().item()
            assert worst <= 1e-6, (tag, name, key, worst)
    assert any(float(s["exp_avg_sq"].abs().sum()) > 0 for s in saved["params"].values()), "moments never moved"


@pytest.mark.slow
def test_elastic_2_then_1_then_2_ranks_continue_the_global_batches_and_adam_state(
        elastic_run: tuple[Path, list[str]], uninterrupted_run: Path) -> None:
    run_dir, outs = elastic_run
    assert "written by 2 ranks, this run has 1: gradient accumulation 2" in outs[1], outs[1][-3000:]
    assert "micro 4 x accumulation 2 x world 1 = global batch 8" in outs[1]
    assert "written by 1 ranks, this run has 2: gradient accumulation 1" in outs[2], outs[2][-3000:]
    assert (run_dir / "checkpoints" / "step_00000006" / "universal").is_dir()

    want = global_batches(uninterrupted_run, {step: 2 for step in range(1, STEPS + 1)})
    got = global_batches(run_dir, _worlds(LEGS))
    assert got == want, [step for step in want if got.get(step) != want[step]]
    seen = [k for step in sorted(want) for k in want[step]]
    assert len(seen) == STEPS * 8 and sorted(seen[:24]) == sorted(set(seen[:24])), "an epoch repeats nothing"

    _assert_restored(run_dir / "audit", "step_00000006", saved_by=2, loaded_by=1)
    _assert_restored(run_dir / "audit", "step_00000010", saved_by=1, loaded_by=2)
    last = read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert last["step"] == STEPS and last["train/samples_seen"] == STEPS * 8


@pytest.mark.slow
def test_elastic_losses_match_the_uninterrupted_run_in_fp32(elastic_run: tuple[Path, list[str]],
                                                            uninterrupted_run: Path) -> None:
    """1 rank x accumulation 2 with global negatives (the whole step's 8 samples, two passes) computes what 2
    ranks x accumulation 1 computes in one pass, with the same dropout: seeds follow the global micro-batch."""
    run_dir, _ = elastic_run
    want = {r["step"]: r["train/loss"] for r in read_jsonl(uninterrupted_run / "metrics.jsonl") if "train/loss" in r}
    got = {r["step"]: r["train/loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r}
    for step in range(LEGS[0][1] + 1, STEPS + 1):
        assert abs(got[step] - want[step]) <= 1e-4, (step, got[step], want[step])


def test_elastic_accumulation_keeps_the_global_batch_or_refuses() -> None:
    from snps3_ds.config import ConfigError, TrainConfig
    from snps3_ds.engine.ds_config import EngineSettings
    from snps3_ds.run.elastic import ResumePoint, fit_accumulation, needs_universal

    settings = EngineSettings("z2.json", {"gradient_accumulation_steps": 1}, 4, 1, "fp32", 1.0, 2)
    point = ResumePoint(Path("ckpt/step_00000006"), written_by=2, global_batch=8)
    on_one = fit_accumulation(settings, TrainConfig(), 1, point)
    assert on_one.grad_accum == 2 and on_one.raw["gradient_accumulation_steps"] == 2
    assert fit_accumulation(settings, TrainConfig(), 2, point) is settings, "same world size: the ds_config stands"
    assert fit_accumulation(settings, TrainConfig(global_batch_size=16), 2, None).grad_accum == 2
    with pytest.raises(ConfigError, match=r"global batch of ckpt/step_00000006 .* is 8, which micro 4 x world 3"):
        fit_accumulation(settings, TrainConfig(), 3, point)
    assert needs_universal(point, 1, "deepspeed", settings) and not needs_universal(point, 2, "deepspeed", settings)
    assert not needs_universal(point, 1, "torch", settings)
