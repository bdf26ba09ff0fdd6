"""launch/export.py: a checkpoint's fp32 weights as safetensors + recipe, loadable without DeepSpeed."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from conftest import REPO, TINY_RECIPE, tiny_overrides
from snps3_ds.config import load_config
from snps3_ds.engine.weights import load_task_state, load_weights, read_task_state
from snps3_ds.models.factory import build_model, build_tokenizer

from snps3_ds.engine.export import export_checkpoint
from snps3_ds.run import pretrain


def test_export_round_trip_from_a_torch_engine_checkpoint(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pretrain.main(["--engine", "torch", "--config", str(TINY_RECIPE), "--ds_config", str(REPO / "ds_configs/tiny_fp32.json"),
                   *tiny_overrides(tiny_corpus, run_dir), "train.max_steps=2"])
    out = export_checkpoint(run_dir / "checkpoints", tmp_path / "export")
    exported, original = read_task_state(out), load_task_state(run_dir / "checkpoints")
    assert exported.keys() == original.keys()
    assert all(torch.equal(exported[k], original[k].float() if original[k].is_floating_point() else original[k])
               for k in original)
    info = json.loads((out / "export.json").read_text())
    assert info["tag"] == "step_00000002" and info["tensors"] == len(original)
    recipe = yaml.safe_load((out / "config.yaml").read_text())
    assert recipe["train"]["max_steps"] == 2 and recipe["model"]["visual_backbone"] == "test_resnet"
    cfg = load_config(TINY_RECIPE)
    model = build_model(cfg.model, build_tokenizer(cfg.model))
    load_weights(model, exported, "model.", out)  # fits the model exactly
