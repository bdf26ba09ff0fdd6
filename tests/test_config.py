"""Config loading: types, overrides, and errors that name the key; every shipped recipe and ds_config loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snps3_ds.config import ConfigError, RunConfig, load_config
from snps3_ds.engine.ds_config import check_against_recipe, load_ds_config

REPO = Path(__file__).resolve().parents[1]


def test_config_values_and_overrides_are_typed() -> None:
    cfg = load_config(None, ["optim.lr=1e-4", "data.num_clips=8", "logging.tags=[a, b]", "data.train_scale=[1, 2]"])
    assert isinstance(cfg, RunConfig)
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.data.num_clips == 8 and cfg.logging.tags == ["a", "b"]
    assert cfg.data.train_scale == (1.0, 2.0)


def test_overrides_win_over_the_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 0.5\ntrain:\n  max_steps: 7\n")
    cfg = load_config(recipe, ["optim.lr=0.25"])
    assert cfg.optim.lr == 0.25 and cfg.train.max_steps == 7


@pytest.mark.parametrize("override, named", [
    ("optim.lrr=1", "optim.lrr"),
    ("nosuch.key=1", "nosuch"),
    ("data.num_clips=four", "data.num_clips"),
    ("data.num_clips=2.5", "data.num_clips"),
    ("masking.kind=bert", "masking.kind"),
    ("data.train_scale=[1]", "data.train_scale"),
    ("train.seed=true", "train.seed"),
])
def test_bad_keys_and_values_name_the_key(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as err:
        load_config(None, [override])
    assert "expected" in str(err.value) or "unknown key" in str(err.value)


def test_bad_value_names_expected_type() -> None:
    with pytest.raises(ConfigError, match=r"data\.num_clips: expected int, got 'four'"):
        load_config(None, ["data.num_clips=four"])


def test_unknown_key_in_recipe_names_file(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model:\n  visual_backbon: resnet18\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.visual_backbon"):
        load_config(recipe)


def test_missing_recipe_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("recipe", sorted((REPO / "launch" / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe: Path) -> None:
    load_config(recipe)


@pytest.mark.parametrize("path", sorted((REPO / "ds_configs").glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_ds_config_loads(path: Path) -> None:
    settings = load_ds_config(path)
    assert settings.micro_batch_size >= 1 and settings.grad_accum >= 1


def test_ds_config_micro_batch_disagreeing_with_recipe_is_named(tmp_path: Path) -> None:
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 2}))
    cfg = load_config(None, ["train.micro_batch_size=16"])
    with pytest.raises(ConfigError, match=r"ds\.json.*train_micro_batch_size_per_gpu is 8.*micro_batch_size is 16"):
        check_against_recipe(load_ds_config(ds), cfg.train, world_size=2)
    cfg = load_config(None, ["train.global_batch_size=64"])
    with pytest.raises(ConfigError, match=r"8 x accumulation 2 x world 2 = 32"):
        check_against_recipe(load_ds_config(ds), cfg.train, world_size=2)
    check_against_recipe(load_ds_config(ds), load_config(None, ["train.global_batch_size=32"]).train, world_size=2)


@pytest.mark.parametrize("content, named", [
    ("{}", "train_micro_batch_size_per_gpu"),
    ('{"train_micro_batch_size_per_gpu": 0}', "train_micro_batch_size_per_gpu"),
    ('{"train_micro_batch_size_per_gpu": 2, "train_batch_size": 4}', "train_batch_size"),
    ('{"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": true}, "fp16": {"enabled": true}}', "bf16"),
    ("{not json", "not valid JSON"),
])
def test_bad_ds_config_is_named(tmp_path: Path, content: str, named: str) -> None:
    ds = tmp_path / "ds.json"
    ds.write_text(content)
    with pytest.raises(ConfigError, match=named):
        load_ds_config(ds)
