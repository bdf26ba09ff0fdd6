"""Reading model weights back from a run's checkpoints, whichever engine wrote them."""

from __future__ import annotations

from pathlib import Path

import torch


def resolve_checkpoint(path: str | Path) -> tuple[Path, str]:
    """(checkpoint root, tag) from a root with a `latest` file, or from a tag folder itself."""
    path = Path(path)
    if (path / "latest").is_file():
        return path, (path / "latest").read_text().strip()
    if path.is_dir() and ((path / "model_states.pt").is_file() or (path / "mp_rank_00_model_states.pt").is_file()):
        return path.parent, path.name
    raise FileNotFoundError(f"no checkpoint at {path}: expected a checkpoint folder with a 'latest' file, "
                            "or one tag folder holding model_states.pt / mp_rank_00_model_states.pt")


def load_task_state(path: str | Path) -> dict[str, torch.Tensor]:
    """fp32 state dict of the trained task module (keys like `model.bert.…`)."""
    root, tag = resolve_checkpoint(path)
    folder = root / tag
    if (folder / "model_states.pt").is_file():  # written by the torch engine
        return torch.load(folder / "model_states.pt", map_location="cpu", weights_only=False)["module"]
    if not (folder / "mp_rank_00_model_states.pt").is_file():
        raise FileNotFoundError(f"{folder}: tag {tag!r} from {root / 'latest'} has no model states")
    from snps3_ds.engine.deepspeed_engine import fp32_state_dict_from_zero_checkpoint

    return fp32_state_dict_from_zero_checkpoint(root, tag)


def load_model_weights(model: torch.nn.Module, path: str | Path, prefix: str = "model.") -> None:
    """Load the `prefix` part of a task checkpoint into `model`; any mismatch is an error naming keys."""
    state = {k[len(prefix):]: v.float() for k, v in load_task_state(path).items() if k.startswith(prefix)}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"checkpoint {path} does not fit the model: missing {result.missing_keys[:8]}, "
                         f"unexpected {result.unexpected_keys[:8]}")
