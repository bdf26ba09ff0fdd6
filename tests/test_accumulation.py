"""ZeRO-2 gradient accumulation loses no micro-batch: 2 ranks x micro 4 x accumulation 2 end where one
process with batch 16 ends, for a loss that is a mean over samples (tolerance 1e-5, fp32 + AdamW)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from launching import deepspeed_cmd, run_ok

SCRIPT = "tests/accumulation_run.py"


def _ds_config(path: Path, micro: int, accum: int, stage: int) -> Path:
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum,
                                "gradient_clipping": 1.0, "zero_optimization": {"stage": stage},
                                "steps_per_print": 10**6}))
    return path


@pytest.mark.slow
def test_accumulation_zero2_two_ranks_matches_single_process_batch_16(tmp_path: Path) -> None:
    zero2 = _ds_config(tmp_path / "zero2.json", micro=4, accum=2, stage=2)
    plain = _ds_config(tmp_path / "plain.json", micro=16, accum=1, stage=0)
    run_ok(deepspeed_cmd(2, SCRIPT, "--ds_config", str(zero2), "--out", str(tmp_path / "zero2" / "params.pt")))
    run_ok([sys.executable, SCRIPT, "--engine", "torch", "--ds_config", str(plain),
            "--out", str(tmp_path / "plain" / "params.pt")])
    got, want = torch.load(tmp_path / "zero2" / "params.pt"), torch.load(tmp_path / "plain" / "params.pt")
    start = {k.removeprefix("net."): v for k, v in _initial().items()}
    assert got.keys() == want.keys()
    for name in want:
        assert not torch.allclose(want[name], start[name.removeprefix("net.")]), f"{name} never moved"
        assert torch.allclose(got[name], want[name], rtol=0, atol=1e-5), (name, (got[name] - want[name]).abs().max())


def _initial() -> dict[str, torch.Tensor]:
    from accumulation_run import ToyTask

    return ToyTask().net.state_dict()
