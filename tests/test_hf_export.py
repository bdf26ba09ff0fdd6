"""launch/export.py's Hugging Face / timm / torchvision layouts: OUT/text/ loads with transformers,
OUT/visual.safetensors with timm (or torchvision), in a fresh offline process that never imports snps3_ds,
and both give our features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import REPO, TINY_RECIPE, tiny_overrides
from snps3_ds.config import ModelConfig, load_config
from snps3_ds.data.text.tokens import tokenize
from snps3_ds.engine.export import export_checkpoint
from snps3_ds.engine.hf_export import export_visual, to_reference_layout
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.models.visual import VisualEncoder
from snps3_ds.run import evaluate, finetune, pretrain

TINY_DS = REPO / "ds_configs" / "tiny_fp32.json"
CAPTIONS = ["a small red circle moves to the left", "a big blue square moves up and then stops",
            "two green triangles"]

# Runs in a fresh interpreter with the hub offline and an empty cache: only transformers, timm and safetensors.
RELOAD = """
import json, sys
import torch
import timm
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertModel

out, inputs, result, max_len = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
captions = json.loads(sys.argv[5])
tokenizer = AutoTokenizer.from_pretrained(out + "/text")
batch = tokenizer(captions, max_length=max_len, truncation=True, padding="max_length", return_tensors="pt")
bert = BertModel.from_pretrained(out + "/text").eval()
with safe_open(out + "/visual.safetensors", "pt") as f:
    meta = f.metadata()
assert meta["library"] == "timm", meta
visual = timm.create_model(meta["model_name"], pretrained=True,
                           pretrained_cfg_overlay=dict(file=out + "/visual.safetensors")).eval()
with torch.no_grad():
    text = bert(**batch)
    grid = visual.forward_features(load_file(inputs)["frames"])
assert not any(name.startswith("snps3_ds") for name in sys.modules), "the reload must not need snps3_ds"
save_file({"ids": batch["input_ids"].contiguous(), "pooled": text.pooler_output.contiguous(),
           "cls": text.last_hidden_state[:, 0].contiguous(), "grid": grid.contiguous()}, result)
print(type(bert).__name__, type(tokenizer).__name__, meta["model_name"])
"""


def _reload_offline(out: Path, frames: torch.Tensor, max_len: int, tmp: Path) -> dict[str, torch.Tensor]:
    save_file({"frames": frames}, str(tmp / "frames.safetensors"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp / "hf_home"),
           "TORCH_HOME": str(tmp / "torch_home"), "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", RELOAD, str(out), str(tmp / "frames.safetensors"),
                           str(tmp / "reloaded.safetensors"), str(max_len), json.dumps(CAPTIONS)],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return load_file(str(tmp / "reloaded.safetensors"))


def test_hf_export_of_a_tiny_run_reloads_with_transformers_and_timm(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pretrain.main(["--engine", "torch", "--config", str(TINY_RECIPE), "--ds_config", str(TINY_DS),
                   *tiny_overrides(tiny_corpus, run_dir), "train.max_steps=2", "train.eval_every=2"])
    out = export_checkpoint(run_dir / "checkpoints", tmp_path / "export")
    assert {p.name for p in (out / "text").iterdir()} >= {"config.json", "model.safetensors", "tokenizer_config.json"}

    # Ours, built from the export as `finetune.py --init OUT` does.
    cfg = load_config(out / "config.yaml")
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer)
    finetune.initialise_from(str(out), rank=0)(model)
    model.eval()
    frames = torch.randn(5, 3, cfg.data.image_size, cfg.data.image_size, generator=torch.Generator().manual_seed(0))
    ids, mask = tokenize(tokenizer, CAPTIONS, cfg.data.max_text_len)
    with torch.no_grad():
        ours = model.encode_text(ids, mask)
        grid = model.visual.backbone.forward_features(frames)

    theirs = _reload_offline(out, frames, cfg.data.max_text_len, tmp_path)
    assert torch.equal(theirs["ids"], ids)
    cosine = F.cosine_similarity(F.normalize(theirs["pooled"], dim=-1), ours.global_feature, dim=-1)
    assert cosine.min() >= 0.99999, cosine
    assert F.cosine_similarity(theirs["cls"], ours.states[:, 0], dim=-1).min() >= 0.99999
    assert theirs["grid"].shape == grid.shape and (theirs["grid"] - grid).abs().max() <= 1e-5
    print(f"text cosine min {cosine.min():.8f}, visual max abs diff {(theirs['grid'] - grid).abs().max():.2e}")

    # `evaluate.py --checkpoint OUT` still reads the export: the same figures as training's final validation.
    final = json.loads((run_dir / "eval_final.json").read_text())
    again = evaluate.main(["--config", str(out / "config.yaml"), "--checkpoint", str(out)])
    keys = ("t2v/R@1", "t2v/R@5", "v2t/R@1", "t2v/MnR")
    assert {k: again[k] for k in keys} == {k: final[f"val/{k}@{cfg.data.num_clips}clips"] for k in keys}

    card = (out / "README.md").read_text()
    for needed in ("## Recipe", "## Data", "## Training", "## Evaluation", "## How to load", "test_resnet",
                   "2 of 2 planned", "eval_final.json", f"| val/t2v/MnR@2clips | {final['val/t2v/MnR@2clips']:.2f} |",
                   str(tiny_corpus / "train"), 'BertModel.from_pretrained("OUT/text")', "pretrained_cfg_overlay",
                   "--init OUT", "`fc.weight`"):
        assert needed in card, needed


def test_hf_export_text_from_a_local_pretrained_bert_dir(tmp_path: Path) -> None:
    """A pretrained BERT directory (here the packaged MiniLM-L6, named by its path): config and tokenizer carry over."""
    from transformers import AutoTokenizer, BertModel

    from snps3_ds.engine.hf_export import export_text
    from snps3_ds.local_files import packaged_text_model_dir

    cfg = ModelConfig(text_model=str(packaged_text_model_dir()), visual_backbone="test_resnet")
    model = build_model(cfg, build_tokenizer(cfg)).eval()
    export_text(cfg, {f"model.bert.{k}": v for k, v in model.bert.state_dict().items()}, tmp_path / "text")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "text", local_files_only=True)
    bert = BertModel.from_pretrained(tmp_path / "text", local_files_only=True).eval()
    assert bert.config.hidden_size == 384 and bert.config.num_hidden_layers == 6
    ids, mask = tokenize(build_tokenizer(cfg), CAPTIONS, 16)
    batch = tokenizer(CAPTIONS, max_length=16, truncation=True, padding="max_length", return_tensors="pt")
    assert torch.equal(batch["input_ids"], ids)
    again = ModelConfig(text_model=str(tmp_path / "text"))  # a new run can start its BERT from the export
    assert torch.equal(tokenize(build_tokenizer(again), CAPTIONS, 16)[0], ids)
    with torch.no_grad():
        theirs = F.normalize(bert(**batch).pooler_output, dim=-1)
        assert F.cosine_similarity(theirs, model.encode_text(ids, mask).global_feature).min() >= 0.99999


def test_hf_export_frozen_batchnorm_backbone_loads_strictly_in_timm(tmp_path: Path) -> None:
    """Frozen BN has no num_batches_tracked and SNP no classifier: both are filled so timm's strict load passes."""
    import timm

    encoder = VisualEncoder("test_resnet", 16, freeze_bn=True).eval()
    state = {f"model.visual.backbone.{k}": v for k, v in encoder.backbone.state_dict().items()}
    info = export_visual(ModelConfig(visual_backbone="test_resnet", freeze_bn=True), state, tmp_path / "v.safetensors")
    assert info.frozen_bn and "fc.weight" in info.zero_filled and any("num_batches" in k for k in info.zero_filled)
    for extra in ({}, {"num_classes": 0}):
        reloaded = timm.create_model("test_resnet", pretrained=True, **extra,
                                     pretrained_cfg_overlay=dict(file=str(tmp_path / "v.safetensors"))).eval()
        frames = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert (reloaded.forward_features(frames) - encoder.backbone.forward_features(frames)).abs().max() <= 1e-5


def test_hf_export_video_swin_in_torchvision_layout(tmp_path: Path) -> None:
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    encoder = VisualEncoder("test_swin3d", 16).eval()
    state = {f"model.visual.backbone.{k}": v for k, v in encoder.backbone.state_dict().items()}
    info = export_visual(ModelConfig(visual_backbone="test_swin3d"), state, tmp_path / "v.safetensors")
    assert info.library == "torchvision" and info.model_name == "SwinTransformer3d"
    assert set(info.zero_filled) == {"head.weight", "head.bias"}
    swin = SwinTransformer3d(**info.kwargs)
    swin.load_state_dict(load_file(str(tmp_path / "v.safetensors")))  # strict
    frames = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        theirs = swin.eval().norm(swin.features(swin.pos_drop(swin.patch_embed(frames.transpose(1, 2)))))
        assert (theirs.permute(0, 1, 4, 2, 3) - encoder._swin3d(frames)).abs().max() <= 1e-5


def test_hf_export_layout_mismatch_is_named() -> None:
    import timm

    with torch.device("meta"):
        reference = timm.create_model("test_resnet")
    ours = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in reference.state_dict().items() if k != "conv1.0.weight"}
    with pytest.raises(ValueError, match="conv1.0.weight"):
        to_reference_layout(ours, reference, ("fc",), "test_resnet")
    with pytest.raises(ValueError, match="stray"):
        to_reference_layout({**ours, "conv1.0.weight": torch.zeros(1), "stray": torch.zeros(1)}, reference, ("fc",),
                            "test_resnet")
