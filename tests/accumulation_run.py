"""Train a toy per-sample loss through the real engine + trainer; write the final parameters (rank 0).

    deepspeed --num_gpus 2 tests/accumulation_run.py --ds_config Z.json --out params.pt   # ZeRO-2
    python tests/accumulation_run.py --engine torch --ds_config P.json --out ref.pt         # plain torch

Every optimiser step consumes the same 16 samples in both set-ups (split over ranks and micro-batches
in the first), and the loss is a mean over samples, so the two must end with the same parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from snps3_ds.config import LoggingConfig, OptimConfig, TrainConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.engine.ds_config import load_ds_config
from snps3_ds.engine.factory import make_engine
from snps3_ds.engine.trainer import train
from snps3_ds.logging import RunLogger
from snps3_ds.processes import shut_down, start_processes
from snps3_ds.tasks.base import TaskOutput

GLOBAL_BATCH, STEPS = 16, 6


class ToyTask(nn.Module):
    """Mean over samples of a squared error: independent of how the samples are grouped."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, batch: VideoTextBatch) -> TaskOutput:
        x = batch.frames.flatten(1).float()
        target = torch.stack([x[:, :4].sum(1), x[:, 4:8].prod(1), x[:, 8:].amax(1)], dim=1)
        loss = (self.net(x) - target).pow(2).sum(1).mean()
        return TaskOutput(loss, {"mse": loss.detach()})


def step_samples(step: int) -> torch.Tensor:
    return torch.randn(GLOBAL_BATCH, 1, 3, 2, 2, generator=torch.Generator().manual_seed(1000 + step))


def batches(rank: int, world: int, micro: int):
    """This rank's micro-batches, step after step: rank r takes a contiguous block of each step's samples."""
    per_rank = GLOBAL_BATCH // world
    for step in range(STEPS):
        mine = step_samples(step)[rank * per_rank:(rank + 1) * per_rank]
        for start in range(0, per_rank, micro):
            frames = mine[start:start + micro]
            n = frames.shape[0]
            ids = torch.zeros(n, 4, dtype=torch.long)
            yield VideoTextBatch([f"s{step}_{rank}_{start + i}" for i in range(n)], frames,
                                 torch.ones(n, 1, dtype=torch.bool), ids, torch.ones_like(ids), torch.arange(n),
                                 ids, torch.full_like(ids, -100))


class ToyStream:
    """The BatchStream the trainer reads: the batches above, a count as position, no skips."""

    def __init__(self, batches) -> None:
        self.batches, self.taken = batches, 0

    def __iter__(self):
        return self

    def __next__(self) -> VideoTextBatch:
        self.taken += 1
        return next(self.batches)

    def state_dict(self) -> dict:
        return {"taken": self.taken}

    def stats(self) -> dict:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ds_config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--engine", choices=["deepspeed", "torch"], default="deepspeed")
    parser.add_argument("--local_rank", type=int, default=0)
    args = parser.parse_args()
    settings = load_ds_config(args.ds_config)
    optim = OptimConfig(lr=1e-2, visual_lr=1e-2, warmup_steps=0, schedule="constant")
    task = ToyTask()
    procs = start_processes(group=args.engine == "deepspeed")
    engine = make_engine(args.engine, task, settings, optim, STEPS, set(), procs)
    out = Path(args.out)
    cfg = TrainConfig(max_steps=STEPS, log_every=STEPS, run_dir=str(out.parent))
    logger = RunLogger(out.parent / "logs", LoggingConfig(wandb_mode="disabled"), {}, enabled=False)
    stream = ToyStream(batches(engine.rank, engine.world_size, engine.micro_batch_size))
    result = train(engine, stream, cfg, logger, out.parent / f"checkpoints_{args.engine}", {})
    assert result.state.step == STEPS
    if engine.rank == 0:
        torch.save({k: v.detach().float().cpu() for k, v in engine.module.state_dict().items()}, out)
    shut_down(procs.world)


if __name__ == "__main__":
    main()
