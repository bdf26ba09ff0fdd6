"""Reading model weights back: from a run's checkpoints (whichever engine wrote them) or a safetensors export.

    checkpoint folder  a run's checkpoints/ (with `latest`) or one tag folder
    export             a .safetensors file, or a folder holding model.safetensors (launch/export.py)

Both hold the task module's keys (`model.bert...`, and for QA `head...`); `load_weights` takes the part
under one prefix and insists that it fits the module exactly. Nothing is unpickled beyond tensors from a
path a user passes: torch-engine states load weights-only, DeepSpeed's ZeRO files go through its zero_to_fp32
with every read made weights-only (snps3_ds.engine.safe_load), exports are safetensors. A file that needs
anything else is refused, naming the file and the global.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from snps3_ds.engine.safe_load import load_plain

DS_MODEL_STATES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")  # ZeRO-0/1/2, 3


def resolve_checkpoint(path: str | Path) -> tuple[Path, str]:
    """(checkpoint root, tag) from a root with a `latest` file, or from a tag folder itself."""
    path = Path(path)
    if (path / "latest").is_file():
        return path, (path / "latest").read_text().strip()
    if path.is_dir() and any((path / name).is_file() for name in ("model_states.pt", *DS_MODEL_STATES)):
        return path.parent, path.name
    raise FileNotFoundError(f"no checkpoint at {path}: expected a checkpoint folder with a 'latest' file, "
                            "or one tag folder holding model_states.pt / mp_rank_00_model_states.pt")


def load_task_state(path: str | Path) -> dict[str, torch.Tensor]:
    """fp32 state dict of the trained task module (keys like `model.bert.…`)."""
    root, tag = resolve_checkpoint(path)
    folder = root / tag
    if (folder / "model_states.pt").is_file():  # written by the torch engine
        return load_plain(folder / "model_states.pt")["module"]
    if not any((folder / name).is_file() for name in DS_MODEL_STATES):
        raise FileNotFoundError(f"{folder}: tag {tag!r} from {root / 'latest'} has no model states")
    from snps3_ds.engine.deepspeed_engine import fp32_state_dict_from_zero_checkpoint

    return fp32_state_dict_from_zero_checkpoint(root, tag)


EXPORT_FILE = "model.safetensors"


def read_task_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The task's state dict (CPU) from a checkpoint folder or a safetensors export."""
    path = Path(path)
    export = path if path.suffix == ".safetensors" else path / EXPORT_FILE
    if export.is_file():
        from safetensors.torch import load_file

        return load_file(str(export))
    if path.suffix == ".safetensors":
        raise FileNotFoundError(f"{path}: safetensors file not found")
    return load_task_state(path)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, source: str | Path) -> None:
    """Load the `prefix` part of `state` into `module` (fp32); any missing or extra key is an error."""
    part = {k[len(prefix):]: v.float() if v.is_floating_point() else v
            for k, v in state.items() if k.startswith(prefix)}
    if not part:
        found = sorted({k.split(".")[0] for k in state})
        raise ValueError(f"{source}: no weights under {prefix!r} (top-level names found: {found[:8]})")
    try:
        result = module.load_state_dict(part, strict=False)
    except RuntimeError as err:  # a shape mismatch, e.g. a QA head trained on another answer vocabulary
        raise ValueError(f"{source}: the weights under {prefix!r} do not fit {type(module).__name__}: {err}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{source}: the weights under {prefix!r} do not fit: missing {result.missing_keys[:8]}, "
                         f"unexpected {result.unexpected_keys[:8]}")
