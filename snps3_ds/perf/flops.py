"""Model FLOPs per training sample, GPU peak throughput and MFU, so a run reports MFU next to its loss.

Why an analytic count rather than a profiler on every step: the estimate is computed once per run and
costs nothing afterwards. Only matmul/conv FLOPs count (the convention of PaLM/nanoGPT MFU): norms,
softmax and element-wise ops are left out. Training = forward + backward ≈ 3x forward for trained
parts; a frozen part costs 1x forward, or 2x when the gradient must still pass through it to trained
parts below. Activation recomputation (gradient checkpointing) is NOT counted: that is hardware FLOPs
utilisation, not model FLOPs utilisation.

The visual backbone is measured, not modelled: torch's FlopCounterMode on one forward of the real
module (one frame for per-frame timm models, one clip sequence for Video Swin) is exact for any
backbone and takes milliseconds; it is cached per module. The BERT passes are counted from the
module's own Linear shapes: 2 x weights x tokens, plus 4 x S^2 x H per layer for attention.
"""

from __future__ import annotations

import os
import re
import weakref

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from snps3_ds.config import ModelConfig, ObjectivesConfig

PEAK_ENV = "SNPS3_PEAK_FLOPS"

# Dense (no sparsity) bf16/fp16 tensor-core peaks from NVIDIA's datasheets, matched in order against
# torch.cuda.get_device_name(); the first pattern that matches wins, so specific names come first.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756e12),
    (r"H100 NVL", 835e12),
    (r"H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    (r"H200 NVL", 835e12),
    (r"H200", 989e12),  # SXM
    (r"GH200", 989e12),
    (r"A100", 312e12),  # SXM and PCIe
    (r"L40S", 362e12),
    (r"L40\b", 181e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),  # not A10G, not A100
    (r"V100S", 130e12),  # fp16 (no bf16 before Ampere)
    (r"V100.*PCIE", 112e12),
    (r"V100", 125e12),  # SXM2/SXM3
    (r"\bT4\b", 65e12),
)

_VISUAL_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], float]]" = weakref.WeakKeyDictionary()


def peak_flops(device: torch.device | str | int | None = None) -> float | None:
    """Dense bf16/fp16 peak FLOP/s of one device, or None when unknown (then MFU is not logged).

    SNPS3_PEAK_FLOPS (e.g. "989e12") overrides the table on any device, CPU included.
    """
    override = os.environ.get(PEAK_ENV)
    if override:
        try:
            value = float(override)
        except ValueError:
            raise ValueError(f"{PEAK_ENV}: expected FLOP/s as a number such as 989e12, got {override!r}") from None
        if value <= 0:
            raise ValueError(f"{PEAK_ENV}: expected a positive number of FLOP/s, got {override!r}")
        return value
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for pattern, peak in PEAK_FLOPS if re.search(pattern, name, re.IGNORECASE)), None)


def mfu(flops_per_sample: float, samples_per_s_per_device: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s on one device over its peak (a fraction, not %)."""
    if peak <= 0:
        raise ValueError(f"mfu: peak FLOP/s must be positive, got {peak}")
    return flops_per_sample * samples_per_s_per_device / peak


def training_flops_per_sample(model: nn.Module, model_cfg: ModelConfig, objectives_cfg: ObjectivesConfig,
                              num_clips: int, image_size: int, text_len: int, *,
                              micro_batch_size: int | None = None, mlm_probability: float = 0.15) -> float:
    """FLOPs of one training sample (forward + backward) of PretrainTask with these objectives.

    model: the SNPModel (any device, meta included). text_len: the padded caption length (data.max_text_len).
    micro_batch_size: needed only for level 2 over all local pairs (B-1 extra fusion passes per sample).
    mlm_probability: share of caption tokens that reach the MLM decoder (masking.probability).
    """
    _check_structure(model, model_cfg)
    hidden = model.bert.config.hidden_size
    visual_trained = _trained(model.visual)
    towers_trained = visual_trained or _trained(model.img_fc) or (model.temporal is not None
                                                                  and _trained(model.temporal))
    video = visual_forward_flops(model.visual, num_clips, image_size) * _factor(visual_trained, False)
    video += _video_head_flops(model, num_clips) * _factor(towers_trained, visual_trained)
    total = video
    text_pass = _needs_text(objectives_cfg)
    if text_pass:
        total += bert_forward_flops(model.bert, text_len, pooled=True) * _factor(_trained(model.bert), False)
    fusion = model.bert if model.fusion_bert is None else model.fusion_bert
    per_fusion = bert_forward_flops(fusion, text_len + num_clips + 1, pooled=False) + 2 * hidden ** 2  # + cross_pooler
    per_fusion *= _factor(_trained(fusion), towers_trained)
    masked = mlm_probability * text_len
    decoder = 2 * masked * (hidden ** 2 + hidden * model.bert.config.vocab_size) * 3  # MLM head on chosen tokens
    if objectives_cfg.mlm > 0:
        total += per_fusion + decoder
    if objectives_cfg.text_mlm > 0:
        total += decoder
    total += _matching_passes(objectives_cfg, micro_batch_size) * per_fusion
    if objectives_cfg.level2 > 0:  # similarity_dense on each scored pair
        total += 3 * 2 * (2 * hidden ** 2 + 2 * hidden) * _level2_pairs(objectives_cfg, micro_batch_size)
    if objectives_cfg.contrastive > 0 and objectives_cfg.contrastive_queue > 0:
        total += _moco_flops(model, objectives_cfg.contrastive_queue, num_clips, image_size, text_len)
    return float(total)


def visual_forward_flops(visual: nn.Module, num_clips: int, image_size: int) -> float:
    """Forward FLOPs of the visual encoder (backbone + projection) on one video of num_clips frames.

    Per-frame (timm) backbones are measured on one frame and scaled; Video Swin sees the clips jointly,
    so it is measured on the whole clip sequence. Measured once per (module, frames, size).
    """
    frames = 1 if getattr(visual, "kind", "timm") == "timm" else num_clips
    cache = _VISUAL_CACHE.setdefault(visual, {})
    if (frames, image_size) not in cache:
        cache[(frames, image_size)] = _measure(visual, frames, image_size)
    return cache[(frames, image_size)] * (num_clips // frames)


def _measure(module: nn.Module, frames: int, image_size: int) -> float:
    """FlopCounterMode on one no-grad eval-mode forward; the training flags are restored afterwards
    (eval mode also keeps BatchNorm statistics untouched and allows a batch of one)."""
    param = next(module.parameters())
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        x = torch.zeros(1, frames, 3, image_size, image_size, device=param.device, dtype=param.dtype)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        for m, flag in flags.items():
            m.training = flag
    return float(counter.get_total_flops())


def bert_forward_flops(bert: nn.Module, tokens: int, pooled: bool) -> float:
    """Forward FLOPs of a BertModel over one sequence: Linear weights x tokens x 2, plus attention
    (QK^T and AV: 4 S^2 H per layer), plus the pooler when it runs."""
    config = bert.config
    weights = sum(m.weight.numel() for m in bert.encoder.modules() if isinstance(m, nn.Linear))
    attention = 4 * tokens ** 2 * config.hidden_size * config.num_hidden_layers
    pooler = 2 * config.hidden_size ** 2 if pooled else 0
    return 2 * weights * tokens + attention + pooler


def _video_head_flops(model: nn.Module, num_clips: int) -> float:
    """Forward FLOPs after the backbone: the temporal encoder over [cls] + clips, and img_fc per clip."""
    fc = sum(m.weight.numel() for m in model.img_fc.modules() if isinstance(m, nn.Linear))
    temporal = 0.0 if model.temporal is None else bert_forward_flops(model.temporal.bert, num_clips + 1, pooled=False)
    return 2 * fc * num_clips + temporal


def _needs_text(obj: ObjectivesConfig) -> bool:
    """Whether PretrainTask runs the text pass (mirrors PretrainTask.needs_text)."""
    mines = (obj.level2 > 0 and obj.level2_hard_negatives > 0) or (obj.vtm > 0 and obj.vtm_negatives == "hard")
    return mines or obj.contrastive > 0 or obj.text_mlm > 0 or obj.lvwm > 0


def _level2_pairs(obj: ObjectivesConfig, micro_batch_size: int | None) -> int:
    """Pairs scored per sample by level 2: the positive plus 2k mined ones, or all B local pairs."""
    if obj.level2_hard_negatives > 0:
        return 1 + 2 * obj.level2_hard_negatives
    if micro_batch_size is None:
        raise ValueError("training_flops_per_sample: objectives.level2 over all local pairs "
                         "(level2_hard_negatives=0) needs micro_batch_size")
    return micro_batch_size


def _matching_passes(obj: ObjectivesConfig, micro_batch_size: int | None) -> int:
    """Fusion passes per sample of level 2 and VTM (see PretrainTask._matching): the positive pass is
    shared, level 2 adds its negative pairs, VTM one negative caption per video."""
    if obj.level2 <= 0 and obj.vtm <= 0:
        return 0
    passes = 1
    if obj.level2 > 0:
        passes += _level2_pairs(obj, micro_batch_size) - 1
    if obj.vtm > 0:
        passes += 1
    return passes


def _moco_flops(model: nn.Module, queue: int, num_clips: int, image_size: int, text_len: int) -> float:
    """MoCo: forward-only key towers, plus query-vs-queue logits (forward and query gradient)."""
    hidden = model.bert.config.hidden_size
    keys = visual_forward_flops(model.visual, num_clips, image_size) + _video_head_flops(model, num_clips)
    keys += bert_forward_flops(model.bert, text_len, pooled=True)
    return keys + 2 * (2 * hidden * queue * (num_clips + 1))


def _trained(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _factor(trained: bool, input_needs_grad: bool) -> int:
    """3x forward when trained; a frozen part still passes gradient down (2x) when its input needs it."""
    return 3 if trained else 2 if input_needs_grad else 1


def _check_structure(model: nn.Module, cfg: ModelConfig) -> None:
    """The config says which passes run; the model says how big they are: they must describe one model."""
    if (cfg.temporal_layers > 0) != (getattr(model, "temporal", None) is not None):
        raise ValueError(f"training_flops_per_sample: model.temporal_layers={cfg.temporal_layers} does not "
                         "match the model passed in")
    if (cfg.fusion == "separate") != (getattr(model, "fusion_bert", None) is not None):
        raise ValueError(f"training_flops_per_sample: model.fusion={cfg.fusion!r} does not match the model passed in")
