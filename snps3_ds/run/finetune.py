"""Fine-tuning on a downstream task (retrieval, open-ended QA, multi-choice QA): the pre-training run flow
with a task annotation, a task module, pre-trained weights and the annotation's own validation."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from snps3_ds.config import ConfigError, RunConfig
from snps3_ds.data.loader import build_eval_loader
from snps3_ds.downstream.annotations import Annotation, load_annotation
from snps3_ds.downstream.texts import task_texts
from snps3_ds.engine.trainer import TrainResult
from snps3_ds.engine.weights import load_weights, read_task_state
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.downstream import DownstreamOptions, evaluate_annotation
from snps3_ds.evaluation.metrics import metric_key
from snps3_ds.evaluation.report import log_table
from snps3_ds.run import cli
from snps3_ds.run.training import TrainingJob, run_training
from snps3_ds.tasks.pretrain import PretrainTask
from snps3_ds.tasks.qa import QATask


def parse_args(argv: list[str] | None = None, description: str = "Fine-tune SNP-S3") -> argparse.Namespace:
    parser = cli.base_parser(description)
    parser.add_argument("--task", choices=["retrieval", "qa", "mcqa"],
                        help="the downstream task (default: the recipe's task.kind)")
    parser.add_argument("--init", help="pre-trained weights: checkpoint folder, tag folder or export folder")
    cli.add_training_args(parser)
    return parser.parse_args(argv)


def resolve_kind(args: argparse.Namespace, cfg: RunConfig, train: Annotation) -> str:
    kind = args.task or cfg.task.kind
    if kind == "pretrain":
        raise ConfigError("launch/finetune.py needs a downstream task: --task retrieval|qa|mcqa or task.kind")
    if args.task and cfg.task.kind not in ("pretrain", args.task):
        raise ConfigError(f"--task {args.task} but the recipe {args.config} says task.kind={cfg.task.kind}")
    expected = {"retrieval": ("retrieval",), "qa": ("qa",), "mcqa": ("mcqa", "retrieval")}[kind]
    if train.task not in expected:
        raise ConfigError(f"task.train_annotation {train.source}: a {train.task} annotation cannot train {kind} "
                          f"(expected {' or '.join(expected)})")
    return kind


def build_task_for(kind: str, cfg: RunConfig, train: Annotation):
    def build(model, tokenizer, rank: int, world: int):
        if kind == "qa":
            return QATask(model, len(train.answers), cfg.task.qa_head)
        # Retrieval, and multi-choice trained as retrieval on the right option: the pre-training task with
        # the recipe's objectives (level-1 contrastive + level-2 matching in the paper's fine-tuning).
        return PretrainTask(model, cfg.objectives, cfg.model, rank, world)
    return build


def initialise_from(path: str | None, rank: int):
    def init(model) -> None:
        if path is None:
            if rank == 0:
                print("warning: no --init: fine-tuning from random weights", flush=True)
            return
        load_weights(model, read_task_state(path), "model.", path)
        if rank == 0:
            print(f"initialised the model from {path}", flush=True)
    return init


def validation(cfg: RunConfig, annotations: list[Annotation], tuning: list[Annotation]):
    """Every eval annotation through its protocol, on every rank; rank 0 logs the worst queries as a table.
    The tuning annotations go first: each chooses its task's joint weight (evaluation/joint_weight.py) for
    the eval annotations that follow, at this step's weights."""
    def make(engine, tokenizer, procs):
        clips = cfg.eval.num_clips or cfg.data.num_clips
        loaders = [build_eval_loader(cfg.data, tokenizer, cfg.eval.batch_size, clips, texts=task_texts(a, train=False))
                   for a in [*tuning, *annotations]]
        base = DownstreamOptions(clips, cfg.task.rerank_k, cfg.task.fusion_exhaustive, cfg.task.ground_truth)

        def evaluate(step: int) -> dict[str, float]:
            metrics: dict[str, float] = {}
            options, ctx = base, EvalContext.of(engine)
            for i, (annotation, loader) in enumerate(zip([*tuning, *annotations], loaders)):
                tunes = i < len(tuning)
                result = evaluate_annotation(engine.module, annotation, loader,
                                             replace(options, choose_joint_weight=tunes), ctx)
                metrics.update({f"val/{k}": v for k, v in result.metrics.items()})
                if tunes:
                    chosen = {**options.joint_weights, annotation.task: result.best_weight}
                    options = replace(options, joint_weights=chosen)
                    metrics[f"val/{metric_key(annotation.split, 'joint_weight/chosen')}"] = result.best_weight
                    if procs.rank == 0:
                        print(f"step {step}: joint weight {result.best_weight:g} chosen on {annotation.split} "
                              f"for {annotation.task} (dual + w * fusion logit)", flush=True)
                if procs.rank == 0:  # W&B (when on): the worst-ranked queries / wrong answers at this step
                    log_table(f"val/{annotation.split}/worst", result.worst, step)
            return metrics
        return evaluate
    return make


def check_tuning(cfg: RunConfig, tuning: list[Annotation]) -> None:
    """task.joint_weight_annotations: one retrieval (with re-ranking) and/or one multi-choice annotation."""
    tasks = [a.task for a in tuning]
    for annotation in tuning:
        where = f"task.joint_weight_annotations: {annotation.source}"
        if annotation.task not in ("retrieval", "mcqa"):
            raise ConfigError(f"{where} is a {annotation.task!r} annotation; a joint weight is chosen on "
                              "'retrieval' (with task.rerank_k > 0) or 'mcqa' annotations")
        if annotation.task == "retrieval" and cfg.task.rerank_k < 1:
            raise ConfigError(f"{where}: choosing the re-ranking weight needs task.rerank_k > 0")
        if tasks.count(annotation.task) > 1:
            raise ConfigError(f"{where}: more than one {annotation.task!r} annotation; list one per task")


def check_evaluations(kind: str, train: Annotation, evals: list[Annotation]) -> None:
    if kind == "qa" and any(a.task == "qa" and a.answers != train.answers for a in evals):
        raise ConfigError("the QA eval annotations must carry the training annotation's answer vocabulary "
                          "(build them with data_prep/build_annotations.py --answers TRAIN.json)")
    if kind != "qa" and any(a.task == "qa" for a in evals):
        raise ConfigError("open-ended QA evaluation needs --task qa (its answer head is trained there)")


def main(argv: list[str] | None = None, description: str = "Fine-tune SNP-S3") -> TrainResult:
    args = parse_args(argv, description)
    cfg = cli.load_run_config(args)
    if not cfg.task.train_annotation:
        raise ConfigError(f"{args.config}: task.train_annotation is not set (the training split's annotation file)")
    train = load_annotation(cfg.task.train_annotation)
    kind = resolve_kind(args, cfg, train)
    evals = [load_annotation(path) for path in cfg.task.eval_annotations]
    check_evaluations(kind, train, evals)
    tuning = [load_annotation(path) for path in cfg.task.joint_weight_annotations]
    check_tuning(cfg, tuning)
    rank = int(os.environ.get("RANK", "0"))
    return run_training(TrainingJob(cfg, args.ds_config, build_task_for(kind, cfg, train), args.engine, args.resume,
                                    init=initialise_from(args.init, rank), texts=task_texts(train, train=True),
                                    validation=validation(cfg, evals, tuning) if evals or tuning else None,
                                    recipe=args.config))
