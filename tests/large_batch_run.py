"""Train the real pre-training task on synthetic samples through the real engine + trainer; write the final
parameters and the logged losses (rank 0).

    deepspeed --num_gpus 2 tests/large_batch_run.py --ds_config Z.json --negatives step --out run/params.pt
    python tests/large_batch_run.py --engine torch --ds_config P.json --negatives micro --out ref/params.pt

Every optimiser step consumes the same 16 samples whatever the layout (rank r, micro-batch j of a step take
samples (j x world + r) x micro ...), and every sample's content, caption mask and LVWM words are drawn from its
own seed, so two layouts see the same data. Objectives: level-1 contrastive (learned temperature), LVWM,
masked-token prediction, level 2 with 2 hard negatives and VTM with hard negatives.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from snps3_ds.config import LoggingConfig, ModelConfig, ObjectivesConfig, OptimConfig, TrainConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.engine.ds_config import load_ds_config
from snps3_ds.engine.factory import make_engine
from snps3_ds.engine.trainer import train
from snps3_ds.logging import RunLogger
from snps3_ds.models.snp import SNPModel, visual_parameter_names
from snps3_ds.processes import shut_down, start_processes
from snps3_ds.tasks.pretrain import PretrainTask

GLOBAL_BATCH, CLIPS, LENGTH, WORDS = 16, 2, 12, 2
MODEL = ModelConfig(visual_backbone="test_resnet", freeze_bn=True, learn_temperature=True)  # the packaged MiniLM BERT


def objectives(negatives: str) -> ObjectivesConfig:
    return ObjectivesConfig(contrastive=1.0, lvwm=1.0, mlm=1.0, level2=1.0, level2_hard_negatives=2, vtm=1.0,
                            vtm_negatives="hard", negatives=negatives)


def sample(index: int) -> dict[str, torch.Tensor]:
    """Sample `index`, all from its own generator: frames, caption ids, an MLM mask, LVWM word positions."""
    gen = torch.Generator().manual_seed(10_000 + index)
    length = int(torch.randint(5, LENGTH - 1, (1,), generator=gen))
    ids = torch.zeros(LENGTH, dtype=torch.long)
    ids[0], ids[length + 1] = 101, 102
    ids[1:length + 1] = torch.randint(2000, 8000, (length,), generator=gen)
    mask = (ids != 0).long()
    labels = torch.full_like(ids, -100)
    chosen = 1 + torch.randperm(length, generator=gen)[:max(1, length // 4)]
    labels[chosen] = ids[chosen]
    mlm_ids = ids.clone()
    mlm_ids[chosen] = 103
    words = 1 + torch.randperm(length, generator=gen)[:WORDS]
    frames = torch.randn(CLIPS, 3, 32, 32, generator=gen)
    return {"frames": frames, "ids": ids, "mask": mask, "mlm_ids": mlm_ids, "labels": labels, "words": words}


def batches(rank: int, world: int, micro: int, accum: int):
    """This rank's micro-batches, step after step, dealt as the training stream deals them: micro-batch j of
    rank r is the step's global micro-batch j x world + r."""
    step = 0
    while True:
        for j in range(accum):
            first = step * GLOBAL_BATCH + (j * world + rank) * micro
            items = [sample(first + i) for i in range(micro)]
            stack = {name: torch.stack([item[name] for item in items]) for name in items[0]}
            yield VideoTextBatch([f"s{first + i}" for i in range(micro)], stack["frames"],
                                 torch.ones(micro, CLIPS, dtype=torch.bool), stack["ids"], stack["mask"],
                                 torch.arange(micro), stack["mlm_ids"], stack["labels"], stack["words"])
        step += 1


class Stream:
    """The BatchStream the trainer reads."""

    def __init__(self, source) -> None:
        self.source = source

    def __iter__(self):
        return self

    def __next__(self) -> VideoTextBatch:
        return next(self.source)

    def state_dict(self) -> dict:
        return {}

    def stats(self) -> dict:
        return {}


def build_task(negatives: str, dropout: float, rank: int, world: int) -> PretrainTask:
    torch.manual_seed(0)
    model = SNPModel(MODEL, sep_token_id=102)
    for module in model.modules():  # BERT's attention reads its Dropout's p too
        if isinstance(module, nn.Dropout):
            module.p = dropout
    return PretrainTask(model, objectives(negatives), MODEL, rank, world)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ds_config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--engine", choices=["deepspeed", "torch"], default="deepspeed")
    parser.add_argument("--negatives", choices=["auto", "step", "micro"], default="auto")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--eps", type=float, default=1e-8, help="AdamW epsilon")
    parser.add_argument("--local_rank", type=int, default=0)
    args = parser.parse_args()
    settings = load_ds_config(args.ds_config)
    procs = start_processes(group=args.engine == "deepspeed")
    task = build_task(args.negatives, args.dropout, procs.rank, procs.world)
    visual = {f"model.{name}" for name in visual_parameter_names(task.model)}
    optim = OptimConfig(lr=1e-3, visual_lr=1e-3, warmup_steps=0, schedule="constant", eps=args.eps)
    engine = make_engine(args.engine, task, settings, optim, args.steps, visual, procs)
    out = Path(args.out)
    cfg = TrainConfig(max_steps=args.steps, log_every=1, run_dir=str(out.parent))
    logger = RunLogger(out.parent, LoggingConfig(wandb_mode="disabled"), {}, enabled=procs.rank == 0)
    stream = Stream(batches(procs.rank, procs.world, settings.micro_batch_size, settings.grad_accum))
    result = train(engine, stream, cfg, logger, out.parent / "checkpoints", {})
    assert result.state.step == args.steps
    logger.close()
    if procs.rank == 0:
        torch.save({k: v.detach().float().cpu() for k, v in engine.module.state_dict().items()}, out)
        rows = [json.loads(line) for line in (out.parent / "metrics.jsonl").read_text().splitlines()]
        (out.parent / "losses.json").write_text(json.dumps([row["train/loss"] for row in rows]))
    shut_down(procs.world)


if __name__ == "__main__":
    main()
