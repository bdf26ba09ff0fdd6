"""Loading never runs code from a checkpoint file: a crafted pickle that would create a file when unpickled is
refused by launch/evaluate.py --checkpoint, launch/finetune.py --init and a DeepSpeed resume, naming the file
and the global; ordinary torch-engine and DeepSpeed ZeRO checkpoints and exports still load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_RECIPE, tiny_overrides
from launching import deepspeed_cmd, launch_env, run_ok
from snps3_ds.engine.safe_load import FORCE_WEIGHTS_ONLY, UnsafeCheckpointError, load_plain, plain_loads_only
from snps3_ds.engine.weights import load_task_state, read_task_state

TINY_DS = "ds_configs/tiny_fp32.json"
GLOBAL = "io.open"  # what the crafted pickle calls: open(marker, "w") creates the marker file
TAG = "step_00000002"


class CreatesFile:
    """Pickles as a call of open(path, "w"): unpickling it with full pickle creates `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def crafted_checkpoint(root: Path, layout: str, marker: Path, tag: str = TAG) -> Path:
    """ROOT/latest and ROOT/TAG/<states file> for `layout` (torch engine or DeepSpeed), whose pickle holds
    ordinary-looking weights next to a CreatesFile(marker)."""
    name = {"torch": "model_states.pt", "deepspeed": "mp_rank_00_model_states.pt"}[layout]
    (root / tag).mkdir(parents=True)
    (root / "latest").write_text(tag)
    torch.save({"module": {"model.w": torch.zeros(2)}, "client_state": {"x": CreatesFile(marker)}}, root / tag / name)
    return root / tag / name


def test_safe_load_crafted_file_is_refused_naming_file_and_global(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    for layout in ("torch", "deepspeed"):
        file = crafted_checkpoint(tmp_path / layout, layout, marker)
        with pytest.raises(UnsafeCheckpointError, match=f"{file}: refused to load: its pickle needs {GLOBAL}"):
            load_task_state(tmp_path / layout)
        with pytest.raises(UnsafeCheckpointError, match=GLOBAL):
            load_plain(file)
    assert not marker.exists()


def test_safe_load_deepspeeds_own_reader_runs_the_crafted_file_but_not_inside_plain_loads_only(tmp_path: Path) -> None:
    """DeepSpeed's checkpoint engine unpickles with full pickle (the control creates its marker); inside
    plain_loads_only the same call is weights-only and refused, and the block leaves no trace behind."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    from snps3_ds.engine.deepspeed_engine import plain_types

    control, marker = tmp_path / "control-marker", tmp_path / "marker"
    TorchCheckpointEngine().load(str(crafted_checkpoint(tmp_path / "control", "deepspeed", control)))
    assert control.exists(), "the crafted file must be one whose unpickling creates a file"
    file = crafted_checkpoint(tmp_path / "ckpt", "deepspeed", marker)
    allowed_before = set(torch.serialization.get_safe_globals())
    with pytest.raises(UnsafeCheckpointError, match=f"{file}: refused .* {GLOBAL}"):
        with plain_loads_only(tmp_path / "ckpt" / TAG, plain_types()):
            TorchCheckpointEngine().load(str(file), map_location="cpu")
    assert not marker.exists()
    assert FORCE_WEIGHTS_ONLY not in os.environ and set(torch.serialization.get_safe_globals()) == allowed_before


def _fails(cmd: list[str], timeout: int = 180) -> str:
    """Run a command that must fail; its stdout + stderr."""
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode != 0, f"{' '.join(cmd)} succeeded:\n{proc.stdout[-2000:]}"
    return proc.stdout + proc.stderr


# One layout per script keeps the test short: both scripts read through weights.read_task_state, and
# test_safe_load_crafted_file_... refuses both layouts there.
@pytest.mark.parametrize("script, layout", [("evaluate", "torch"), ("finetune", "deepspeed")])
def test_safe_load_evaluate_checkpoint_and_finetune_init_refuse_a_crafted_file(
        tiny_corpus: Path, tmp_path: Path, script: str, layout: str) -> None:
    marker = tmp_path / "marker"
    file = crafted_checkpoint(tmp_path / "foreign", layout, marker)
    base = [sys.executable, f"launch/{script}.py", "--config", str(TINY_RECIPE)]
    if script == "evaluate":
        cmd = [*base, *tiny_overrides(tiny_corpus), "--checkpoint", str(tmp_path / "foreign")]
    else:
        from snps3_ds.demo.tasks import make_demo_tasks

        if not (tiny_corpus / "tasks" / "retrieval_train.json").is_file():
            make_demo_tasks(tiny_corpus)
        cmd = [*base, "--task", "retrieval", "--engine", "torch", "--ds_config", TINY_DS, "--init", str(tmp_path / "foreign"),
               *tiny_overrides(tiny_corpus, tmp_path / "run"),
               f"task.train_annotation={tiny_corpus / 'tasks' / 'retrieval_train.json'}"]
    out = _fails(cmd)
    assert f"{file}: refused to load: its pickle needs {GLOBAL}" in out, out[-3000:]
    assert not marker.exists()


@pytest.fixture(scope="module")
def zero2_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-rank ZeRO-2 fp32 DeepSpeed run of 2 steps (RUN/checkpoints/step_00000002)."""
    run_dir = tmp_path_factory.mktemp("zero2") / "run"
    run_ok(deepspeed_cmd(2, "launch/pretrain.py", "--config", str(TINY_RECIPE), "--ds_config", TINY_DS,
                         *tiny_overrides(tiny_corpus, run_dir), "train.max_steps=2", "data.num_workers=1"),
           OMP_NUM_THREADS="1")
    return run_dir


def test_safe_load_zero2_checkpoint_and_export_load_as_deepspeed_reads_them(zero2_run: Path, tmp_path: Path) -> None:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from snps3_ds.engine.export import export_checkpoint, recipe_of

    ours = load_task_state(zero2_run / "checkpoints")
    theirs = get_fp32_state_dict_from_zero_checkpoint(str(zero2_run / "checkpoints"), tag=TAG)  # full pickle
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    exported = read_task_state(export_checkpoint(zero2_run / "checkpoints", tmp_path / "export"))
    assert exported.keys() == ours.keys() and all(torch.equal(exported[k], ours[k].float()) for k in ours)
    alone = tmp_path / "copied" / "checkpoints" / TAG  # no RUN/config.yaml beside: the recipe from the states
    shutil.copytree(zero2_run / "checkpoints" / TAG, alone)
    assert recipe_of(alone)["model"]["visual_backbone"] == "test_resnet"


def test_safe_load_torch_engine_checkpoint_still_loads(tiny_corpus: Path, tmp_path: Path) -> None:
    from snps3_ds.run import pretrain

    run_dir = tmp_path / "run"
    pretrain.main(["--engine", "torch", "--config", str(TINY_RECIPE), "--ds_config", str(REPO / TINY_DS),
                   *tiny_overrides(tiny_corpus, run_dir), "train.max_steps=1"])
    state = load_task_state(run_dir / "checkpoints")
    assert any(k.startswith("model.bert.") for k in state) and all(isinstance(v, torch.Tensor) for v in state.values())


def test_safe_load_deepspeed_resume_of_a_tampered_run_folder_is_refused(zero2_run: Path, tiny_corpus: Path,
                                                                        tmp_path: Path) -> None:
    """--resume reads only the run's own folder; even there, DeepSpeed's load_checkpoint unpickles nothing
    beyond plain types: a partition file with a crafted object stops the resume, naming it."""
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(zero2_run, run_dir)
    partition = run_dir / "checkpoints" / TAG / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    state = load_plain(partition, _plain_types())
    state["tampered"] = CreatesFile(marker)
    torch.save(state, partition)
    cmd = deepspeed_cmd(2, "launch/pretrain.py", "--config", str(TINY_RECIPE), "--ds_config", TINY_DS,
                        *tiny_overrides(tiny_corpus, run_dir), "train.max_steps=3", "data.num_workers=1",
                        "--resume", "auto")
    out = _fails(cmd, timeout=300)
    assert f"{partition}: refused to load: its pickle needs {GLOBAL}" in out, out[-3000:]
    assert not marker.exists()


def _plain_types() -> list[type]:
    from snps3_ds.engine.deepspeed_engine import plain_types

    return plain_types()
