"""FLOPs estimate for MFU: the measured backbone count, the whole-task estimate against a FlopCounterMode
measurement of a real forward + backward, and the peak table / override."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from snps3_ds.config import RunConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.perf import flops
from snps3_ds.perf.flops import mfu, peak_flops, training_flops_per_sample, visual_forward_flops
from snps3_ds.tasks.pretrain import PretrainTask

MASKED = 2  # caption tokens masked per caption in the test batch


def _batch(cfg: RunConfig, tokenizer, videos: int) -> VideoTextBatch:
    from snps3_ds.data.text.tokens import tokenize

    ids, mask = tokenize(tokenizer, [f"a red circle number {i} moves left" for i in range(videos)],
                         cfg.data.max_text_len)
    labels = torch.full_like(ids, -100)
    labels[:, 2:2 + MASKED] = ids[:, 2:2 + MASKED]
    masked = ids.clone()
    masked[:, 2:2 + MASKED] = tokenizer.mask_token_id
    size, clips = cfg.data.image_size, cfg.data.num_clips
    return VideoTextBatch([f"k{i}" for i in range(videos)], torch.randn(videos, clips, 3, size, size),
                          torch.ones(videos, clips, dtype=torch.bool), ids, mask, torch.arange(videos), masked, labels)


def _measured_per_sample(task: PretrainTask, batch: VideoTextBatch) -> float:
    with FlopCounterMode(display=False) as counter:
        task(batch).loss.backward()
    return counter.get_total_flops() / batch.num_videos


def test_backbone_count_is_positive_and_linear_in_clips(tiny_config: RunConfig) -> None:
    model = build_model(tiny_config.model, build_tokenizer(tiny_config.model))
    size = tiny_config.data.image_size
    one, two, four = (visual_forward_flops(model.visual, t, size) for t in (1, 2, 4))
    assert one > 0 and two == 2 * one and four == 4 * one
    with FlopCounterMode(display=False) as counter, torch.no_grad():  # a real 4-frame forward agrees
        model.visual.eval()(torch.randn(2, 4, 3, size, size))
    assert counter.get_total_flops() == pytest.approx(2 * four, rel=0.01)
    assert visual_forward_flops(model.visual, 4, size * 2) > 3 * four  # ~quadratic in the image side


@pytest.mark.parametrize("objectives", [{}, {"vtm": 1.0, "level2": 1.0, "level2_hard_negatives": 1}])
def test_estimate_matches_a_measured_training_step(tiny_config: RunConfig, objectives: dict) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config, objectives=dataclasses.replace(tiny_config.objectives, **objectives))
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer)
    task = PretrainTask(model, cfg.objectives, cfg.model)
    measured = _measured_per_sample(task, _batch(cfg, tokenizer, videos=4))
    text_len = cfg.data.max_text_len
    estimate = training_flops_per_sample(model, cfg.model, cfg.objectives, cfg.data.num_clips, cfg.data.image_size,
                                         text_len, micro_batch_size=4, mlm_probability=MASKED / text_len)
    assert 0.5 < estimate / measured < 2.0, (estimate, measured)
    assert 0.8 < estimate / measured < 1.25, (estimate, measured)  # tighter: only tiny ops are left out


def test_matching_objectives_add_fusion_passes(tiny_config: RunConfig) -> None:
    model = build_model(tiny_config.model, build_tokenizer(tiny_config.model))
    data, base = tiny_config.data, tiny_config.objectives

    def estimate(micro_batch_size: int | None = None, **changes) -> float:
        return training_flops_per_sample(model, tiny_config.model, dataclasses.replace(base, **changes),
                                         data.num_clips, data.image_size, data.max_text_len,
                                         micro_batch_size=micro_batch_size)

    plain, vtm = estimate(), estimate(vtm=1.0)
    all_pairs_8, all_pairs_16 = estimate(8, level2=1.0), estimate(16, level2=1.0)
    assert plain < vtm < all_pairs_8 < all_pairs_16
    with pytest.raises(ValueError, match="micro_batch_size"):
        estimate(level2=1.0)
    for p in model.visual.parameters():  # a frozen backbone costs its forward only
        p.requires_grad_(False)
    assert estimate() < plain


def test_peak_table_override_and_mfu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    assert peak_flops("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    names = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H200": 989e12,
             "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A10": 125e12, "NVIDIA A10G": None, "NVIDIA L4": 121e12,
             "NVIDIA L40S": 362e12, "Tesla V100-SXM2-16GB": 125e12, "Some Future GPU": None}
    for name, peak in names.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert peak_flops("cuda:0") == peak, name
    monkeypatch.setenv(flops.PEAK_ENV, "1e12")
    assert peak_flops("cpu") == 1e12
    monkeypatch.setenv(flops.PEAK_ENV, "fast")
    with pytest.raises(ValueError, match=flops.PEAK_ENV):
        peak_flops()
    assert mfu(1e9, 100.0, 1e12) == pytest.approx(0.1)
