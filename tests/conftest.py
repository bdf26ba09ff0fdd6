"""Shared fixtures: a tiny generated corpus and the tiny recipe, so every test runs in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from snps3_ds.demo.corpus import ShardLayout, make_demo_corpus
from snps3_ds.config import RunConfig, load_config

TINY_RECIPE = REPO / "launch" / "recipes" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 training and 8 held-out clips of moving shapes, H.264 in WebDataset shards."""
    out = tmp_path_factory.mktemp("corpus")
    make_demo_corpus(out, train=24, test=8, seed=0, workers=1, shards=ShardLayout(10))
    return out


def tiny_overrides(corpus: Path, run_dir: Path | None = None) -> list[str]:
    overrides = [f"data.train_shards=[{corpus / 'train'}]", f"data.eval_shards=[{corpus / 'test'}]"]
    if run_dir is not None:
        overrides.append(f"train.run_dir={run_dir}")
    return overrides


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged BERT tokenizer (loaded once)."""
    from snps3_ds.data.text.tokens import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def vp9(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small VP9 (webm) corpus: what DALI's CPU decoder can read."""
    from shard_factory import vp9_corpus

    return vp9_corpus(tmp_path_factory.mktemp("vp9"))


@pytest.fixture
def tiny_config(tiny_corpus: Path, tmp_path: Path) -> RunConfig:
    return load_config(TINY_RECIPE, tiny_overrides(tiny_corpus, tmp_path / "run"))


@pytest.fixture(scope="session")
def uninterrupted_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-rank, 14-step ZeRO-2 fp32 run with sample traces: what interrupted and elastic runs must reproduce."""
    from launching import deepspeed_cmd, pretrain_args, run_ok

    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_ok(deepspeed_cmd(2, "launch/pretrain.py", *pretrain_args(tiny_corpus, run_dir, "train.max_steps=14")),
           OMP_NUM_THREADS="1")
    return run_dir
