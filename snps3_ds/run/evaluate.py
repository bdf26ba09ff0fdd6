"""The stand-alone evaluation: retrieval, open-ended QA or multi-choice QA of a checkpoint (or the untrained
model) on held-out shards, on one process or many ranks (every rank gets the same figures).

Without --annotation: text-video retrieval over the eval shards' own captions (the pre-training evaluation,
plain metric names). With one: the annotation's task and texts, metrics named `<split>/...@<N>clips`. The
videos always come from the recipe's data.eval_shards. Open-ended QA has two protocols: the fine-tuned
classifier (a checkpoint with `head.*` weights, or none: an untrained head) and zero-shot answer matching
(snps3_ds.evaluation.qa_zero_shot), which runs when the checkpoint has no `head.*` weights or with
--qa-zero-shot.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from typing import Any

import torch

from snps3_ds.data.loader import build_eval_loader
from snps3_ds.demo.ensure import ensure_demo_data
from snps3_ds.downstream.annotations import Annotation, load_annotation
from snps3_ds.downstream.texts import TaskTexts, task_texts
from snps3_ds.engine.weights import load_weights, read_task_state
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.embeddings import export_embeddings
from snps3_ds.evaluation.features import GROUND_TRUTHS, EvalFeatures
from snps3_ds.evaluation.mcqa import evaluate_mcqa
from snps3_ds.evaluation.qa import QuestionType, evaluate_qa
from snps3_ds.evaluation.qa_zero_shot import (DEFAULT_TEMPLATE, TEMPLATES, ZeroShotOptions, evaluate_qa_zero_shot,
                                              resolve_template)
from snps3_ds.evaluation.retrieval import RetrievalOptions, run_retrieval
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.processes import barrier, shut_down, start_processes
from snps3_ds.ranking import NonFiniteScores
from snps3_ds.reports.gallery import GalleryPage, find_curves, question_rows, retrieval_queries, write_gallery
from snps3_ds.run import cli
from snps3_ds.run.eval_report import report, table_keys
from snps3_ds.tasks.qa import QATask

DESCRIPTION = "Evaluate retrieval, open-ended QA or multi-choice QA on held-out shards"


@dataclass
class Evaluation:
    """One evaluation's inputs, shared by the protocol functions."""

    args: argparse.Namespace
    annotation: Annotation | None
    texts: TaskTexts | None
    tokenizer: Any
    clips: int
    loader: Any
    ctx: EvalContext
    retrieval: Any = None  # the RetrievalResult (scores, features), kept for --report

    @property
    def split(self) -> str:
        return self.annotation.split if self.annotation else ""


def parse_args(argv: list[str] | None = None, description: str = DESCRIPTION) -> argparse.Namespace:
    parser = cli.base_parser(description)
    parser.add_argument("--checkpoint", help="checkpoint folder (with `latest`), one tag folder, a .safetensors "
                                             "file or an export folder; omit to evaluate the untrained model")
    parser.add_argument("--out", help="write the metrics here as JSON")
    parser.add_argument("--baseline", help="a JSON written earlier by --out, printed beside these results")
    parser.add_argument("--task", choices=["retrieval", "qa", "mcqa"], help="default: the annotation's task, "
                                                                           "else retrieval")
    parser.add_argument("--annotation", help="annotation JSON (snps3_ds.downstream.annotations) of the split")
    parser.add_argument("--rerank", type=int, default=0, metavar="K",
                        help="retrieval: re-rank each query's top-K with the fusion scorer (0: off)")
    parser.add_argument("--joint-weight", type=float, metavar="W",
                        help="retrieval with --rerank, and multi-choice: also report the joint score dual + W * "
                             "fusion logit (rerank_weighted, mc/acc_weighted); a fine-tune prints the W its "
                             "validation split chose (task.joint_weight_annotations)")
    parser.add_argument("--fusion-exhaustive", action="store_true",
                        help="retrieval: also fusion-score every text-video pair, as the reference does")
    parser.add_argument("--ground-truth", choices=GROUND_TRUTHS, default="string",
                        help="retrieval: a caption's right videos are all videos with that caption string (the "
                             "reference's protocol, the default) or only its own (instance, CLIP4Clip)")
    parser.add_argument("--export-embeddings", metavar="DIR", help="retrieval: write text/video embeddings here")
    parser.add_argument("--qa-head", choices=["linear", "mlp"], default="linear", help="QA classifier shape")
    parser.add_argument("--qa-type-words", type=int, default=0, metavar="N",
                        help="QA: per-type accuracy with the question's first N words as its type (items with "
                             "a `type` key use that)")
    parser.add_argument("--qa-zero-shot", action="store_true",
                        help="QA: score every answer as a statement with the retrieval similarity instead of a "
                             "classifier head (the default when the checkpoint has no `head.*` weights)")
    parser.add_argument("--qa-template", metavar="NAME|FORMAT",
                        help=f"zero-shot QA statement: {' or '.join(sorted(TEMPLATES))} or a format string with "
                             f"{{answer}} (and {{question}}); default {DEFAULT_TEMPLATE!r}")
    parser.add_argument("--qa-fusion", action="store_true",
                        help="zero-shot QA: also pick answers with the fusion scorer (zs_fusion_acc)")
    parser.add_argument("--worst", type=int, default=20, help="worst-ranked queries kept for the W&B table / JSON")
    parser.add_argument("--report", metavar="DIR", help="write a static gallery DIR/index.html (metrics, worst and "
                                                        "random queries with their top-5 videos, QA/MC answers)")
    parser.add_argument("--local_rank", type=int, default=0, help="set by the deepspeed launcher")
    return parser.parse_args(argv)


def resolve_task(args, annotation: Annotation | None) -> str:
    task = args.task or (annotation.task if annotation else "retrieval")
    if annotation is not None and annotation.task != task:
        raise ValueError(f"--task {task} but {args.annotation} is a {annotation.task!r} annotation")
    if task != "retrieval" and annotation is None:
        raise ValueError(f"--task {task} needs --annotation (the questions and answers of the split)")
    if task != "retrieval" and (args.rerank or args.fusion_exhaustive or args.export_embeddings):
        raise ValueError("--rerank, --fusion-exhaustive and --export-embeddings apply to --task retrieval only")
    if args.joint_weight is not None and not (task == "mcqa" or (task == "retrieval" and args.rerank)):
        raise ValueError("--joint-weight applies to --task retrieval with --rerank K, and to --task mcqa")
    if task != "qa" and (args.qa_zero_shot or args.qa_template or args.qa_fusion):
        raise ValueError("--qa-zero-shot, --qa-template and --qa-fusion apply to --task qa only")
    if args.qa_template:
        resolve_template(args.qa_template)  # a bad template fails before any model is built
    return task


def qa_protocol(args, task: str, state: dict[str, torch.Tensor] | None) -> str | None:
    """QA: "classifier" (fine-tuned head) or "zero-shot" (answer matching); None for other tasks."""
    if task != "qa":
        return None
    headless = state is not None and not any(k.startswith("head.") for k in state)
    if args.qa_zero_shot or headless:
        return "zero-shot"
    if args.qa_template or args.qa_fusion:
        raise ValueError(f"--qa-template / --qa-fusion apply to zero-shot QA, but {args.checkpoint or 'no checkpoint'} "
                         "selects the classifier protocol: add --qa-zero-shot")
    return "classifier"


def main(argv: list[str] | None = None, description: str = DESCRIPTION) -> dict[str, float]:
    args = parse_args(argv, description)
    cfg = cli.load_run_config(args)
    procs = start_processes(group=False)
    if procs.rank == 0:
        ensure_demo_data(cfg)
    barrier(procs.world)
    annotation = load_annotation(args.annotation) if args.annotation else None
    task = resolve_task(args, annotation)
    torch.manual_seed(cfg.train.seed)  # the untrained model is the one pre-training starts from
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer)
    state = read_task_state(args.checkpoint) if args.checkpoint else None
    protocol = qa_protocol(args, task, state)
    module = QATask(model, len(annotation.answers), args.qa_head) if protocol == "classifier" else model
    if state is not None:
        load_state(module, state, args.checkpoint)
    elif protocol == "classifier" and procs.rank == 0:
        print("no --checkpoint: the answer classifier is untrained (chance-level QA; --qa-zero-shot matches "
              "answers with the retrieval similarity instead)", flush=True)
    module.to(procs.device)
    clips = cfg.eval.num_clips or cfg.data.num_clips
    texts = task_texts(annotation, train=False) if annotation else None
    loader = build_eval_loader(cfg.data, tokenizer, cfg.eval.batch_size, clips, texts=texts)
    run = Evaluation(args, annotation, texts, tokenizer, clips, loader,
                     EvalContext(procs.device, procs.rank, procs.world))
    try:
        metrics, extra = evaluate_task(run, task, protocol, module, model)
    except NonFiniteScores as err:  # a broken checkpoint fails, named, instead of reporting figures
        raise NonFiniteScores(f"{args.checkpoint or 'the untrained model'}: {err}") from None
    if procs.rank == 0:
        report(args, cfg, task, run.split, metrics, extra)
        if args.report:
            write_report(run, cfg, task, metrics, extra)
    shut_down(procs.world)
    return metrics


def evaluate_task(run: Evaluation, task: str, protocol: str | None, module: torch.nn.Module, model
                  ) -> tuple[dict[str, float], dict]:
    """The metrics of one protocol and what its report shows beside them (worst queries, records)."""
    if task == "retrieval":
        return evaluate_retrieval_task(run, model)
    if task == "qa":
        return evaluate_qa_task(run, protocol, module)
    result = evaluate_mcqa(model, run.loader, float(model.temperature()), run.split, run.clips, run.ctx,
                           run.args.joint_weight)
    return result.metrics, {"records": result.records}


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """`model.*` into the SNP model; for QA also `head.*` into the classifier (from a QA fine-tune)."""
    if isinstance(module, QATask):
        load_weights(module.model, state, "model.", path)
        if not any(k.startswith("head.") for k in state):
            raise ValueError(f"{path}: no `head.*` weights; QA evaluation needs a QA fine-tuned checkpoint "
                             "(the answer classifier is trained there)")
        load_weights(module.head, state, "head.", path)
    else:
        load_weights(module, state, "model.", path)


def evaluate_qa_task(run: Evaluation, protocol: str, module: torch.nn.Module) -> tuple[dict[str, float], dict]:
    """The classifier head's accuracy, or zero-shot answer matching; says on rank 0 which one ran."""
    args, annotation, texts = run.args, run.annotation, run.texts
    types = question_types(annotation, args)
    if protocol == "classifier":
        if run.ctx.rank == 0:
            print(f"QA protocol: fine-tuned classifier head over {len(annotation.answers)} answers", flush=True)
        result = evaluate_qa(module, run.loader, annotation.split, run.clips, run.ctx, types)
        return result.metrics, {"qa_protocol": protocol, "records": result.records}
    template = resolve_template(args.qa_template or DEFAULT_TEMPLATE)
    if run.ctx.rank == 0:
        scorers = "dual encoder + fusion scorer" if args.qa_fusion else "dual encoder"
        print(f"QA protocol: zero-shot answer matching ({len(annotation.answers)} answers as statements "
              f"{template!r}, {scorers})", flush=True)
    options = ZeroShotOptions(template, args.qa_fusion, types,
                              question_of=lambda video, order: texts.texts_of(video)[order])
    result = evaluate_qa_zero_shot(module, run.loader, annotation.answers, annotation.split, run.clips, run.tokenizer,
                                   run.ctx, options)
    return result.metrics, {"qa_protocol": protocol, "qa_template": template, "records": result.records}


def evaluate_retrieval_task(run: Evaluation, model) -> tuple[dict[str, float], dict]:
    args = run.args
    options = RetrievalOptions(split=run.split, num_clips=run.clips if run.annotation else None,
                               rerank_k=args.rerank, exhaustive=args.fusion_exhaustive, worst=args.worst,
                               ground_truth=args.ground_truth, joint_weight=args.joint_weight)
    text_of = functools.partial(describe_text, texts=run.texts, tokenizer=run.tokenizer)
    result = run_retrieval(model, run.loader, float(model.temperature()), options, run.ctx, text_of=text_of)
    if args.export_embeddings and run.ctx.rank == 0:
        export_embeddings(result.features, args.export_embeddings, float(model.temperature()), text_of)
        print(f"embeddings written to {args.export_embeddings}", flush=True)
    run.retrieval = result
    return result.metrics, {"worst": result.worst}


def write_report(run: Evaluation, cfg, task: str, metrics: dict[str, float], extra: dict) -> None:
    """--report DIR: the gallery page (snps3_ds.reports.gallery), queries sampled with the recipe's seed."""
    args, seed = run.args, cfg.train.seed
    page = GalleryPage(f"{run.split or 'evaluation'}: {task}", metrics, table_keys(metrics, task, run.split),
                       shards=list(cfg.data.eval_shards), curves=find_curves(args.checkpoint),
                       notes=[f"checkpoint: {args.checkpoint or 'none (the untrained model)'}",
                              f"random sample seeded with train.seed = {seed}"])
    if task == "retrieval":
        text_of = functools.partial(describe_text, texts=run.texts, tokenizer=run.tokenizer)
        page.queries = retrieval_queries(run.retrieval, text_of, seed=seed)
    else:
        page.questions = question_rows(task, extra["records"], run.annotation, seed=seed)
    print(f"gallery written to {write_gallery(args.report, page)}", flush=True)


def describe_text(feats: EvalFeatures, i: int, texts: TaskTexts | None, tokenizer) -> str:
    """The original text from the annotation, else the caption decoded from its (truncated) token ids."""
    if texts is not None:
        return texts.texts_of(feats.keys[int(feats.text_video[i])])[int(feats.text_order[i])]
    ids = feats.text_ids[i][feats.text_mask[i].bool()]
    return tokenizer.decode(ids.tolist(), skip_special_tokens=True)


def question_types(annotation: Annotation, args) -> QuestionType | None:
    """Per-question type from the items' `type` key, else the first --qa-type-words words, else None."""
    by_video = annotation.by_video()
    has_types = all("type" in item for item in annotation.items)
    if not has_types and args.qa_type_words <= 0:
        return None

    def kind(video: str, order: int) -> str:
        item = by_video[video][order]
        if has_types:
            return str(item["type"])
        return " ".join(item["question"].lower().rstrip("?").split()[:args.qa_type_words])

    return kind
