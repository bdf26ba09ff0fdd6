"""The export in the layouts other libraries read, so the trained towers load without snps3_ds:

    OUT/text/               a plain transformers BertModel (config.json, model.safetensors) + the run's tokenizer
    OUT/visual.safetensors  the visual backbone in timm's (or torchvision's) own key layout, its name in the metadata
    OUT/README.md           the model card (snps3_ds.engine.model_card)

OUT/model.safetensors stays the whole task module under our names (`model.bert.…`, `model.visual.backbone.…`):
what `--init` / `--checkpoint` read. The copies here hold only the two towers; the heads only SNP uses
(visual.proj, img_fc, temporal encoder, cross_pooler, similarity_dense, vtm/MLM heads, a P3E fusion BERT)
stay in model.safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from snps3_ds.config import ModelConfig, load_config
from snps3_ds.engine.model_card import VisualExport, write_model_card
from snps3_ds.engine.weights import EXPORT_FILE, load_weights
from snps3_ds.local_files import resolve_text_dir
from snps3_ds.models.factory import build_tokenizer
from snps3_ds.models.visual import BackboneSpec, backbone_spec

TEXT_DIR = "text"
VISUAL_FILE = "visual.safetensors"
BERT_PREFIX = "model.bert."
BACKBONE_PREFIX = "model.visual.backbone."


def write_hub_formats(out: Path, tensors: dict[str, torch.Tensor], tag_dir: Path) -> VisualExport:
    """OUT/text/, OUT/visual.safetensors and OUT/README.md from the exported tensors and OUT/config.yaml."""
    cfg = load_config(out / "config.yaml")  # the very recipe `--config OUT/config.yaml` gives the consumers
    export_text(cfg.model, tensors, out / TEXT_DIR)
    visual = export_visual(cfg.model, tensors, out / VISUAL_FILE)
    write_model_card(out, cfg, visual, tag_dir)
    print(f"wrote {out / TEXT_DIR} (transformers BertModel + tokenizer), {out / VISUAL_FILE} "
          f"({visual.library} {visual.model_name}) and {out / 'README.md'}", flush=True)
    return visual


def export_text(cfg: ModelConfig, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """`model.bert.*` as a BertModel with its pooler, saved with transformers' own writer, beside the tokenizer.

    SNP's shared BERT is a stock BertModel: the fusion pass only feeds it other inputs (token type 1, restarted
    positions), so nothing needs converting; the strict load below would name any key that did not fit.
    """
    from transformers import BertConfig, BertModel

    # The same shape choice as snps3_ds.models.snp.build_bert, without loading the pretrained weights we replace.
    if cfg.text_config is not None:
        config = BertConfig(**cfg.text_config)
    else:
        config = BertConfig.from_pretrained(str(resolve_text_dir(cfg.text_model)), local_files_only=True)
    config.architectures = ["BertModel"]
    bert = BertModel(config, add_pooling_layer=True)
    load_weights(bert, tensors, BERT_PREFIX, folder.parent / EXPORT_FILE)
    bert.save_pretrained(folder)
    build_tokenizer(cfg).save_pretrained(folder)


def export_visual(cfg: ModelConfig, tensors: dict[str, torch.Tensor], file: Path) -> VisualExport:
    """`model.visual.backbone.*` under the keys of the library's own model, written with its name."""
    from safetensors.torch import save_file

    spec = backbone_spec(cfg.visual_backbone)
    ours = {k[len(BACKBONE_PREFIX):]: v for k, v in tensors.items() if k.startswith(BACKBONE_PREFIX)}
    if not ours:
        raise ValueError(f"{file.parent / EXPORT_FILE}: no weights under {BACKBONE_PREFIX!r} to export")
    reference, info = reference_backbone(spec)
    layout, filled = to_reference_layout(ours, reference, _classifiers(reference, spec), info.model_name)
    info = VisualExport(info.library, info.model_name, info.kwargs, tuple(filled), cfg.freeze_bn)
    metadata = {"format": "pt", "library": info.library, "model_name": info.model_name,
                "kwargs": json.dumps(info.kwargs), "zero_filled": ",".join(info.zero_filled),
                "frozen_bn": str(info.frozen_bn).lower(), "source": f"snps3_ds {BACKBONE_PREFIX}*"}
    save_file({k: v.contiguous() for k, v in layout.items()}, str(file), metadata=metadata)
    return info


def reference_backbone(spec: BackboneSpec) -> tuple[nn.Module, VisualExport]:
    """The library's own model, as `timm.create_model(name)` / torchvision build it (classifier included),
    on the meta device: only its keys, shapes and dtypes are needed, so no memory or init time is spent."""
    with torch.device("meta"):
        if spec.kind == "timm":
            import timm

            return timm.create_model(spec.builder, pretrained=False), VisualExport("timm", spec.builder)
        from torchvision.models import video
        from torchvision.models.video.swin_transformer import SwinTransformer3d

        if spec.builder:
            return getattr(video, spec.builder)(weights=None), VisualExport("torchvision", spec.builder)
        return SwinTransformer3d(**spec.kwargs), VisualExport("torchvision", "SwinTransformer3d", dict(spec.kwargs))


def _classifiers(reference: nn.Module, spec: BackboneSpec) -> tuple[str, ...]:
    """Module names of the classifier SNP never builds (timm's pretrained_cfg names it; torchvision: head)."""
    if spec.kind != "timm":
        return ("head",)
    names = getattr(reference, "pretrained_cfg", {}).get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def to_reference_layout(ours: dict[str, torch.Tensor], reference: nn.Module, classifiers: tuple[str, ...],
                        name: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our backbone's tensors under the reference's keys; what ours lacks by construction is zero-filled.

    We build backbones with the same constructor (timm with num_classes=0, global_pool=""; torchvision with
    head=Identity), so the names already agree; two kinds of key exist only in the reference: the classifier
    (zeros: SNP trains none, and timm's default `pretrained=True` load is strict, so it must be present) and
    BatchNorm's `num_batches_tracked` (frozen BN drops it; only used when momentum is None). Any other
    difference means the layouts disagree, which is an error naming the keys.
    """
    target = reference.state_dict()
    extra = sorted(set(ours) - set(target))
    heads = tuple(f"{c}." for c in classifiers)
    missing = [k for k in target if k not in ours and not (k.startswith(heads) or k.endswith("num_batches_tracked"))]
    if extra or missing:
        raise ValueError(f"the trained backbone does not fit {name}'s key layout: keys only ours {extra[:8]}, "
                         f"keys only {name} {missing[:8]}")
    layout, filled = {}, []
    for key, ref in target.items():
        if key not in ours:
            layout[key] = torch.zeros(ref.shape, dtype=ref.dtype)
            filled.append(key)
        elif tuple(ours[key].shape) != tuple(ref.shape):
            raise ValueError(f"backbone key {key}: shape {tuple(ours[key].shape)} here, {tuple(ref.shape)} in {name}")
        else:
            layout[key] = ours[key].to(ref.dtype)
    return layout, filled
