"""SNP model shapes and the sharing that defines it, on a random-init tiny BERT and timm's test_resnet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from snps3_ds.config import RunConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.tasks.pretrain import PretrainTask


def _batch(cfg: RunConfig, tokenizer, videos: int = 3) -> VideoTextBatch:
    from snps3_ds.data.text.tokens import tokenize

    ids, mask = tokenize(tokenizer, ["a red circle moves left"] * videos, cfg.data.max_text_len)
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    masked = ids.clone()
    masked[:, 2] = tokenizer.mask_token_id
    clip_mask = torch.ones(videos, cfg.data.num_clips, dtype=torch.bool)
    clip_mask[0, 1:] = False
    size = cfg.data.image_size
    return VideoTextBatch([f"k{i}" for i in range(videos)], torch.randn(videos, cfg.data.num_clips, 3, size, size),
                          clip_mask, ids, mask, torch.arange(videos), masked, labels)


def test_model_forward_backward_shapes(tiny_config: RunConfig) -> None:
    tokenizer = build_tokenizer(tiny_config.model)
    model = build_model(tiny_config.model, tokenizer)
    batch = _batch(tiny_config, tokenizer)
    hidden, clips, length = model.hidden_size, tiny_config.data.num_clips, tiny_config.data.max_text_len
    video = model.encode_video(batch.frames, batch.clip_mask)
    assert video.tokens.shape == (3, clips, hidden) and video.clip_features.shape == (3, clips, hidden)
    torch.testing.assert_close(video.clip_features.norm(dim=-1), torch.ones(3, clips))
    text = model.encode_text(batch.text_ids, batch.text_mask)
    assert text.states.shape == (3, length, hidden) and text.global_feature.shape == (3, hidden)
    fused = model.fuse(batch.mlm_ids, batch.text_mask, video.tokens, batch.clip_mask)
    assert fused.text_states.shape == (3, length, hidden) and fused.pooled.shape == (3, hidden)

    task = PretrainTask(model, tiny_config.objectives, tiny_config.model)
    out = task(batch)
    assert set(out.losses) == {"contrastive", "mlm"} and out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.visual.parameters())
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert model.mlm_head.dense.weight.grad is not None  # cross_pooler serves the matching objectives (later)


def test_model_fusion_shares_the_text_bert(tiny_config: RunConfig) -> None:
    """SNP: with only the MLM objective on, the gradient reaches BERT's layers and word embeddings
    through the fusion pass, and no second encoder exists."""
    tokenizer = build_tokenizer(tiny_config.model)
    model = build_model(tiny_config.model, tokenizer)
    tiny_config.objectives.contrastive = 0.0
    task = PretrainTask(model, tiny_config.objectives, tiny_config.model)
    task(_batch(tiny_config, tokenizer)).loss.backward()
    assert model.bert.encoder.layer[-1].output.dense.weight.grad.abs().sum() > 0
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.bert.pooler.dense.weight.grad is None  # the text pooler is untouched by fusion
    bert_modules = [m for m in model.modules() if type(m).__name__ == "BertModel"]
    assert len(bert_modules) == 1


def test_model_padded_clips_do_not_change_fusion(tiny_config: RunConfig) -> None:
    tokenizer = build_tokenizer(tiny_config.model)
    model = build_model(tiny_config.model, tokenizer).eval()
    batch = _batch(tiny_config, tokenizer)
    video = model.encode_video(batch.frames, batch.clip_mask)
    noisy = video.tokens.clone()
    noisy[0, 1:] += 5.0  # video 0 has one real clip
    a = model.fuse(batch.mlm_ids, batch.text_mask, video.tokens, batch.clip_mask).pooled[0]
    b = model.fuse(batch.mlm_ids, batch.text_mask, noisy, batch.clip_mask).pooled[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Fusion switch, temporal encoder, every objective through the task, MoCo, checkpointing, parameter counts
# ---------------------------------------------------------------------------------------------------------

from snps3_ds.config import load_config  # noqa: E402

from conftest import TINY_RECIPE  # noqa: E402

ALL_OBJECTIVES = ["objectives.level2=1", "objectives.vtm=1", "objectives.lvwm=1", "objectives.text_mlm=1",
                  "model.text_mlm_head=true"]
NO_DROPOUT = ["model.text_config.hidden_dropout_prob=0.0", "model.text_config.attention_probs_dropout_prob=0.0"]


def _tiny(*overrides: str) -> tuple[RunConfig, object, object]:
    cfg = load_config(TINY_RECIPE, list(overrides))
    tokenizer = build_tokenizer(cfg.model)
    torch.manual_seed(0)
    return cfg, tokenizer, build_model(cfg.model, tokenizer)


def _lvwm_batch(cfg: RunConfig, tokenizer, videos: int = 4) -> VideoTextBatch:
    from snps3_ds.data.text.tokens import tokenize

    captions = ["a red circle moves left", "a blue square jumps", "a red circle moves left", "two green stars"]
    batch = _batch(cfg, tokenizer, videos)
    ids, mask = tokenize(tokenizer, captions[:videos], cfg.data.max_text_len)
    batch.text_ids, batch.text_mask = ids, mask
    batch.word_positions = torch.tensor([[1, 2, 3]] * videos)
    return batch


def test_model_every_objective_trains_every_parameter() -> None:
    cfg, tokenizer, model = _tiny(*ALL_OBJECTIVES, "model.temporal_layers=1", "model.learn_temperature=true")
    task = PretrainTask(model, cfg.objectives, cfg.model)
    out = task(_lvwm_batch(cfg, tokenizer))
    assert set(out.losses) == {"contrastive", "level2", "vtm", "mlm", "text_mlm", "lvwm"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    for prefix in ("l1", "l2", "lvwm"):
        assert {f"{prefix}_t2v_R@1", f"{prefix}_t2v_R@5", f"{prefix}_t2v_R@10", f"{prefix}_t2v_MdR"} <= set(out.metrics)
    assert {"mlm_acc", "text_mlm_acc", "vtm_acc"} <= set(out.metrics)
    out.loss.backward()
    missing = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_model_hard_negatives_and_moco_run_and_keys_stay_untrained() -> None:
    cfg, tokenizer, model = _tiny(*ALL_OBJECTIVES, "objectives.level2_hard_negatives=2",
                                  "objectives.vtm_negatives=hard", "objectives.contrastive_queue=16")
    task = PretrainTask(model, cfg.objectives, cfg.model)
    assert task.moco is not None and not any(p.requires_grad for p in task.moco.parameters())
    batch = _lvwm_batch(cfg, tokenizer)
    for _ in range(2):
        out = task(batch)
        out.loss.backward()
        assert torch.isfinite(out.loss) and out.metrics["l2_t2v_R@10"] == 100.0  # 1 + 2 candidates
    assert int(task.moco.text_ptr) == 8 and int(task.moco.video_ptr) == 2 * int(batch.clip_mask.sum()) % 16
    from snps3_ds.engine.optim import param_groups

    trained = {id(p) for group in param_groups(task, cfg.optim, set()) for p in group["params"]}
    assert not any(id(p) in trained for p in task.moco.parameters())


def test_model_lvwm_without_chosen_words_is_a_clear_error() -> None:
    cfg, tokenizer, model = _tiny("objectives.lvwm=1")
    with pytest.raises(ValueError, match="masking.kind=mssm"):
        PretrainTask(model, cfg.objectives, cfg.model)(_batch(cfg, tokenizer))


def test_model_p3e_fuses_with_its_own_bert() -> None:
    """P3E: MLM alone trains the separate fusion BERT and leaves the text BERT untouched."""
    cfg, tokenizer, model = _tiny("model.fusion=separate", "objectives.contrastive=0")
    assert model.fusion_bert is not None and len(model.fusion_bert.encoder.layer) == 3
    torch.testing.assert_close(model.fusion_bert.encoder.layer[0].output.dense.weight,
                               model.bert.encoder.layer[0].output.dense.weight)  # started from the text BERT
    PretrainTask(model, cfg.objectives, cfg.model)(_batch(cfg, tokenizer)).loss.backward()
    assert all(p.grad is None for p in model.bert.parameters())
    assert model.fusion_bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_model_temporal_encoder_ignores_padded_clips() -> None:
    cfg, tokenizer, model = _tiny("model.temporal_layers=2")
    model.eval()
    tokens = torch.randn(2, cfg.data.num_clips, model.hidden_size)
    mask = torch.tensor([[True, False], [True, True]])
    noisy = tokens.clone()
    noisy[0, 1] += 3.0
    a, b = model.temporal(tokens, mask), model.temporal(noisy, mask)
    assert a.shape == tokens.shape
    torch.testing.assert_close(a[0, 0], b[0, 0], atol=1e-5, rtol=1e-5)


def test_model_text_grad_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for flag in ("false", "true"):
        cfg, tokenizer, model = _tiny(*NO_DROPOUT, "objectives.level2=1", f"model.text_grad_checkpointing={flag}")
        model.train()
        PretrainTask(model, cfg.objectives, cfg.model)(_batch(cfg, tokenizer)).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.bert.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_model_count_params_reproduces_table_2() -> None:
    """SNP-R50 160.4 M, P3E-R50 205.5 M, SNP-PVT 161.1 M, P3E-PVT 206.2 M (paper Table II) within 0.5%."""
    from snps3_ds.models.params import TABLE2, table2_counts

    for key, count in table2_counts().items():
        assert abs(count / 1e6 - TABLE2[key]) / TABLE2[key] < 0.005, (key, count)


def test_model_count_params_script(capsys, monkeypatch) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "launch" / "count_params.py"
    monkeypatch.syspath_prepend(str(path.parent))  # the script imports its sibling _setup
    spec = importlib.util.spec_from_file_location("count_params", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--config", str(TINY_RECIPE), "--compare-fusion"])
    printed = capsys.readouterr().out
    assert "SNP (test_resnet, fusion=shared)" in printed and "fusion_bert" in printed and "SNP saves" in printed


def test_model_attentive_masking_replaces_the_loader_mask(tiny_config: RunConfig) -> None:
    """With masking.attentive_probability=1 every training step masks by text-pass attention: the
    reference's count max(int(0.15 n), 1) per caption, all [MASK], labels the original tokens."""
    from snps3_ds.data.text.tokens import SpecialIds
    from snps3_ds.tasks.attentive import AttentiveMasking

    tokenizer = build_tokenizer(tiny_config.model)
    model = build_model(tiny_config.model, tokenizer)
    special = SpecialIds.from_tokenizer(tokenizer)
    seen = []
    attentive = AttentiveMasking(1.0, 0.15, special, seed=0, rank=0)
    original_apply = attentive.apply

    def spy(batch, importance):
        assert importance.shape == batch.text_ids.shape and torch.isfinite(importance).all()
        assert (importance[batch.text_mask.bool()] > 0).all()
        out = original_apply(batch, importance)
        seen.append(out)
        return out

    attentive.apply = spy
    task = PretrainTask(model, tiny_config.objectives, tiny_config.model, attentive=attentive)
    batch = _batch(tiny_config, tokenizer)
    task(batch).loss.backward()
    masked = seen[0]
    chosen = masked.mlm_labels != -100
    words = (batch.text_mask.bool() & ~torch.isin(batch.text_ids, torch.tensor(special.never_mask))).sum(1)
    assert chosen.sum(1).tolist() == [max(int(0.15 * n), 1) for n in words.tolist()]
    assert (masked.mlm_ids[chosen] == tokenizer.mask_token_id).all()
    assert torch.equal(masked.mlm_labels[chosen], batch.text_ids[chosen])
    task.eval()
    seen.clear()
    task(batch)
    assert not seen, "evaluation never masks by attention"


@pytest.mark.parametrize("negatives", ["micro", "step"])
def test_fidelity_moco_momentum_updates_once_per_optimiser_step(tmp_path, negatives: str) -> None:
    """With accumulation k the key encoders' EMA moves once per optimiser step, not k times; per-micro-batch
    and whole-step (planned) negatives alike, through the trainer's step."""
    import json

    from snps3_ds.config import OptimConfig
    from snps3_ds.engine.ds_config import load_ds_config
    from snps3_ds.engine.steps import StepRequest, optimiser_step
    from snps3_ds.engine.torch_engine import TorchEngine
    from snps3_ds.processes import Processes

    cfg, tokenizer, model = _tiny("objectives.lvwm=1", "objectives.contrastive_queue=16",
                                  f"objectives.negatives={negatives}")
    task = PretrainTask(model, cfg.objectives, cfg.model)
    calls = []
    original = task.moco.keys.update
    task.moco.keys.update = lambda towers: (calls.append(1), original(towers))[1]
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 3}))
    engine = TorchEngine(task, load_ds_config(ds), OptimConfig(), 10, set(), Processes(0, 1, 1, torch.device("cpu")))
    batch = _lvwm_batch(cfg, tokenizer)
    for step in (1, 2):
        outcome = optimiser_step(StepRequest(engine, lambda: batch, seed=0, step=step))
        assert outcome.stepped and len(outcome.outputs) == 3
        assert all(torch.isfinite(out.loss) for out in outcome.outputs)
        assert len(calls) == step, f"{len(calls)} momentum updates after {step} optimiser steps of 3 micro-batches"
    assert int(task.moco.text_ptr) == 2 * 3 * 4 % 16  # every micro-batch's keys were enqueued once


@pytest.mark.parametrize("negatives", ["micro", "step"])
def test_model_level2_curriculum_switches_to_hard_negatives_at_its_step(tmp_path, monkeypatch, negatives: str
                                                                         ) -> None:
    """objectives.level2_hard_from_step=3: steps 1-2 mine level-2 negatives at random, steps 3 on the hardest,
    through the trainer's optimiser step (plain and two-pass); a task built at resume follows the step alone."""
    import json

    import snps3_ds.objectives.matching as matching
    import snps3_ds.tasks.planned as planned
    from snps3_ds.config import OptimConfig
    from snps3_ds.engine.ds_config import load_ds_config
    from snps3_ds.engine.steps import StepRequest, optimiser_step
    from snps3_ds.engine.torch_engine import TorchEngine
    from snps3_ds.processes import Processes

    kinds: list[str] = []
    for module in (matching, planned):
        original = module.mining_scores
        monkeypatch.setattr(module, "mining_scores",
                            lambda sim, kind, *rest, f=original: (kinds.append(kind), f(sim, kind, *rest))[1])
    overrides = ("objectives.level2=1", "objectives.level2_hard_negatives=1", "objectives.level2_negatives=random",
                 "objectives.level2_hard_from_step=3", f"objectives.negatives={negatives}")
    cfg, tokenizer, model = _tiny(*overrides)
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}))
    batch = _lvwm_batch(cfg, tokenizer)

    def run(task: PretrainTask, steps: range) -> list[list[str]]:
        engine = TorchEngine(task, load_ds_config(ds), OptimConfig(), 10, set(),
                             Processes(0, 1, 1, torch.device("cpu")))
        per_step = []
        for step in steps:
            kinds.clear()
            outcome = optimiser_step(StepRequest(engine, lambda: batch, seed=0, step=step))
            assert outcome.stepped and all(torch.isfinite(out.loss) for out in outcome.outputs)
            per_step.append(sorted(set(kinds)))
        return per_step

    assert run(PretrainTask(model, cfg.objectives, cfg.model), range(1, 5)) == [["random"]] * 2 + [["hard"]] * 2
    assert run(PretrainTask(model, cfg.objectives, cfg.model), range(4, 5)) == [["hard"]]  # resumed at step 4
    for bad in (("objectives.level2_negatives=hard",), ("objectives.level2_hard_from_step=-1",)):
        cfg, _, model = _tiny(*overrides, *bad)
        with pytest.raises(ValueError, match="level2_hard_from_step"):
            PretrainTask(model, cfg.objectives, cfg.model)


def test_model_fusion_samples_train_level2_and_vtm_on_the_first_samples_only() -> None:
    """fusion_samples=2 of 4: level 2 and VTM equal those of the 2-sample batch (same seeds); other terms see 4."""
    fusion = ("objectives.contrastive=0", "objectives.mlm=0", "objectives.lvwm=0", "objectives.level2=1",
              "objectives.level2_hard_negatives=1", "objectives.level2_negatives=random", "objectives.vtm=1")
    cfg, tokenizer, model = _tiny(*fusion, "objectives.fusion_samples=2")
    batch = _lvwm_batch(cfg, tokenizer)
    model.eval()  # no dropout: the two runs differ only in which samples they see
    torch.manual_seed(5)
    part = PretrainTask(model, cfg.objectives, cfg.model)(batch)
    whole_cfg = load_config(TINY_RECIPE, list(fusion))
    first = dataclasses.replace(batch, keys=batch.keys[:2], frames=batch.frames[:2], clip_mask=batch.clip_mask[:2],
                                text_ids=batch.text_ids[:2], text_mask=batch.text_mask[:2],
                                text_video_index=batch.text_video_index[:2], mlm_ids=batch.mlm_ids[:2],
                                mlm_labels=batch.mlm_labels[:2], word_positions=None)
    torch.manual_seed(5)
    alone = PretrainTask(model, whole_cfg.objectives, whole_cfg.model)(first)
    for term in ("level2", "vtm"):
        assert torch.allclose(part.losses[term], alone.losses[term], atol=1e-6), term


def test_model_level2_random_negatives_are_distinct_and_never_blocked() -> None:
    from snps3_ds.objectives.matching import mine_hard_negatives, mining_scores

    similarity = torch.randn(8, 8)
    same = torch.zeros(8, 8, dtype=torch.bool)
    same[0, 3] = same[3, 0] = True
    seen = set()
    for seed in range(20):
        scores = mining_scores(similarity, "random", torch.Generator().manual_seed(seed))
        mined = mine_hard_negatives(scores, torch.arange(8), 3, same)
        for row, videos in enumerate(mined.videos.tolist()):
            assert len(set(videos)) == 3 and row not in videos and not any(same[row, v] for v in videos)
        seen.add(tuple(mined.videos[0].tolist()))
    assert len(seen) > 5  # random, not the hardest every time
    assert mining_scores(similarity, "hard") is similarity
    with pytest.raises(ValueError, match="level2_negatives"):
        mining_scores(similarity, "easiest")


def test_model_level2_sampled_negatives_follow_the_level1_softmax() -> None:
    """sampled: the first negative of text 0 is drawn with probability softmax(similarity) over its non-blocked
    videos (Gumbel top-k), so frequencies match it and every candidate but the blocked ones is drawn."""
    from snps3_ds.objectives.matching import mine_hard_negatives, mining_scores

    similarity = torch.tensor([[5.0, 2.0, 1.0, 0.0, 1.0]]).expand(5, -1).clone()  # text 0's truth is video 0
    same = torch.zeros(5, 5, dtype=torch.bool)
    same[0, 4] = same[4, 0] = True  # caption 4 is token-identical to caption 0: video 4 never a negative
    generator, draws = torch.Generator().manual_seed(0), 4000
    counts = torch.zeros(5)
    for _ in range(draws):
        mined = mine_hard_negatives(mining_scores(similarity, "sampled", generator), torch.arange(5), 2, same)
        assert len(set(mined.videos[0].tolist())) == 2 and not {0, 4} & set(mined.videos[0].tolist())
        counts[mined.videos[0, 0]] += 1
    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), dim=0)
    assert counts[0] == counts[4] == 0
    assert torch.allclose(counts[1:4] / draws, expected, atol=0.03), (counts / draws).tolist()


def test_model_fusion_samples_refuse_step_negatives() -> None:
    cfg, _, model = _tiny("objectives.level2=1", "objectives.fusion_samples=2", "objectives.negatives=step")
    with pytest.raises(ValueError, match="fusion_samples needs micro-batch negatives"):
        PretrainTask(model, cfg.objectives, cfg.model).plans_steps(2)


@pytest.mark.parametrize("temporal", [0, 2])
def test_model_grid_clip_tokens_give_the_fusion_every_cell(temporal: int) -> None:
    """model.fusion_clip_tokens=grid: the fusion pass sees each clip's h*w cells (clip-major), whose mean is
    the pooled mode's clip token; the contrastive feature, the parameters and masking of padded clips stay."""
    overrides = [f"model.temporal_layers={temporal}", "data.image_size=64", *NO_DROPOUT]
    cfg, tokenizer, pooled_model = _tiny(*overrides)
    grid_cfg, _, grid_model = _tiny(*overrides, "model.fusion_clip_tokens=grid")
    assert grid_model.state_dict().keys() == pooled_model.state_dict().keys()
    grid_model.load_state_dict(pooled_model.state_dict())
    pooled_model.eval(), grid_model.eval()
    batch = _batch(cfg, tokenizer)  # video 0: one real clip of num_clips
    clips = cfg.data.num_clips
    cells = grid_model.visual(batch.frames).shape[-2:].numel()
    assert cells > 1
    with torch.no_grad():
        pooled, grid = (m.encode_video(batch.frames, batch.clip_mask) for m in (pooled_model, grid_model))
        assert grid.tokens.shape == (3, clips * cells, grid_model.hidden_size)
        torch.testing.assert_close(grid.tokens.unflatten(1, (clips, cells)).mean(dim=2), pooled.tokens,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grid.clip_features, pooled.clip_features)
        noisy = grid.tokens.clone()
        noisy[0, cells:] += 5.0  # every cell of video 0's padded clips
        fused = grid_model.fuse(batch.mlm_ids, batch.text_mask, grid.tokens, batch.clip_mask)
        torch.testing.assert_close(fused.pooled[0], grid_model.fuse(batch.mlm_ids, batch.text_mask, noisy,
                                                                    batch.clip_mask).pooled[0], atol=1e-5, rtol=1e-5)
        # where a cell is, the fusion can tell: every cell has its own position (and type 1) in the fused pass
        seen = {}
        hook = grid_model.bert.register_forward_pre_hook(lambda _, args, kwargs: seen.update(kwargs), with_kwargs=True)
        grid_model.fuse(batch.mlm_ids, batch.text_mask, grid.tokens, batch.clip_mask)
        hook.remove()
        length = batch.mlm_ids.shape[1]
        assert seen["position_ids"][0, length:].tolist() == list(range(clips * cells + 1))
        assert seen["token_type_ids"][0, length:].tolist() == [1] * (clips * cells + 1)
        assert seen["attention_mask"][0, length:].tolist() == [1] * cells + [0] * (clips - 1) * cells + [1]
        with pytest.raises(ValueError, match="multiple"):
            grid_model.fuse(batch.mlm_ids, batch.text_mask, grid.tokens[:, :-1], batch.clip_mask)
        too_many = grid.tokens.repeat(1, 40, 1)  # more cells than the tiny BERT has positions
        with pytest.raises(ValueError, match="positions"):
            grid_model.fuse(batch.mlm_ids, batch.text_mask, too_many, batch.clip_mask)
    out = PretrainTask(grid_model.train(), grid_cfg.objectives, grid_cfg.model)(_batch(cfg, tokenizer))
    out.loss.backward()
    assert all(p.grad is not None for p in grid_model.visual.parameters())
    # the start-of-run line says that level 2's cached clip tokens are counted once per clip, not per cell
    level2 = load_config(TINY_RECIPE, ["objectives.level2=1", "objectives.level2_hard_negatives=1"]).objectives
    lines = [PretrainTask(m, level2, c.model).describe_step(2, 2, 1, clips)
             for m, c in ((grid_model, grid_cfg), (pooled_model, cfg))]
    assert "x the cells per clip with grid clip tokens" in lines[0] and "cells" not in lines[1], lines
