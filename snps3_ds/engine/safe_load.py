"""Reading checkpoint files without running code from them (DESIGN §5, safety).

A `.pt` file is a pickle, and a pickle can name any function to call while it loads. `torch.load` with
`weights_only=True` rebuilds only tensors, containers and plain numbers and refuses every other global;
`load_plain` reads one file that way. `plain_loads_only` makes every `torch.load` inside it weights-only,
also in library code that asks torch.load for full pickle itself (DeepSpeed's checkpoint readers): torch's
TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides the caller's argument. The few plain classes DeepSpeed writes into its
optimiser files are allow-listed by the caller for the length of the call only (torch's `safe_globals`; the
variable and the list are process state while the block runs and restored after it, so other threads' loads
in that time are only ever stricter or allow those few classes). A refusal names the file and the global.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_FULL_PICKLE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # torch refuses both at once; unset inside the block
_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")


class UnsafeCheckpointError(ValueError):
    """A checkpoint file that needs more than tensors, containers and allow-listed plain types to load."""


def unsafe_globals(path: Path, allowed: Sequence[Any] = ()) -> list[str]:
    """The globals `path`'s pickle names beyond torch's plain set and `allowed`, read from its opcodes
    without unpickling; [] for a file torch cannot scan (the legacy non-zip format), which the
    weights-only load still guards."""
    with torch.serialization.safe_globals(list(allowed)):
        try:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except (ValueError, RuntimeError, OSError):
            return []


def refusal(path: Path, names: Sequence[str], detail: str = "") -> UnsafeCheckpointError:
    wanted = ", ".join(names) if names else "something other than tensors and plain types"
    return UnsafeCheckpointError(
        f"{path}: refused to load: its pickle needs {wanted}, which is not a tensor, container or allow-listed "
        f"plain type (unpickling it could run code). Load checkpoints and exports only from runs you trust; "
        f"this system reads them with torch.load(weights_only=True) or safetensors{detail}")


def _names_in(err: BaseException) -> list[str]:
    return _GLOBAL.findall(str(err))


def _reason(err: BaseException) -> str:
    """torch's one line on why (its message is mostly advice on how to load the file anyway)."""
    lines = [line.strip() for line in str(err).splitlines() if "WeightsUnpickler error" in line]
    return f" ({(lines or [str(err).strip() or repr(err)])[0][:300]})"


def load_plain(path: str | Path, allowed: Sequence[Any] = (), map_location: Any = "cpu") -> Any:
    """torch.load(path, weights_only=True) with `allowed` globals added for this call only."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        names = unsafe_globals(path, allowed) or _names_in(err)
        raise refusal(path, names, "" if names else _reason(err)) from None


def _refusal_in(folder: Path, err: BaseException, allowed: Sequence[Any]) -> UnsafeCheckpointError:
    """The error for a load that failed somewhere under `folder`: the first file naming a global not allowed."""
    for path in sorted(Path(folder).rglob("*.pt")):
        names = unsafe_globals(path, allowed)
        if names:
            return refusal(path, names)
    return refusal(Path(folder), _names_in(err), _reason(err))


@contextmanager
def plain_loads_only(folder: str | Path, allowed: Sequence[Any] = ()) -> Iterator[None]:
    """Every torch.load inside the block is weights-only, whatever its caller passes, with `allowed` added;
    a refusal names the file under `folder` (the checkpoint being read) and the global it wanted."""
    before = {name: os.environ.pop(name, None) for name in (FORCE_WEIGHTS_ONLY, FORCE_FULL_PICKLE)}
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        with torch.serialization.safe_globals(list(allowed)):
            yield
    except pickle.UnpicklingError as err:
        raise _refusal_in(Path(folder), err, allowed) from None
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
