"""Evaluate retrieval, open-ended QA or multi-choice QA on held-out shards (one process or many ranks).

    python launch/evaluate.py --config RECIPE --checkpoint RUN_DIR/checkpoints [--out results.json]
    python launch/evaluate.py --config RECIPE --out before.json            # the untrained model
    python launch/evaluate.py ... --baseline before.json                   # print both side by side
    python launch/evaluate.py --config RECIPE --annotation msrvtt_1ka.json --checkpoint CKPT --rerank 16
    python launch/evaluate.py --config RECIPE --annotation msrvtt_qa_test.json --checkpoint QA_EXPORT_DIR
    python launch/evaluate.py --config RECIPE --annotation msrvtt_qa_test.json --checkpoint CKPT --qa-fusion
    deepspeed --num_gpus 2 launch/evaluate.py --config RECIPE --annotation msrvtt_mc.json --checkpoint CKPT

Without --annotation: text-video retrieval over the eval shards' own captions (the pre-training evaluation,
plain metric names). With one: the annotation's task and texts, metrics named `<split>/...@<N>clips`. The
videos always come from the recipe's data.eval_shards. --checkpoint takes a checkpoint folder, a tag folder,
a .safetensors file or an export folder holding model.safetensors.

Open-ended QA has two protocols: the fine-tuned classifier (a checkpoint with `head.*` weights, or no
checkpoint: an untrained head) and zero-shot answer matching (snps3_ds.evaluation.qa_zero_shot), which runs
when the checkpoint has no `head.*` weights (a pre-trained retrieval model) or with --qa-zero-shot.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import _setup  # noqa: F401  (import path)
import torch
import torch.distributed as dist

from snps3_ds.config import RunConfig, to_dict
from snps3_ds.data.loader import build_eval_loader
from snps3_ds.downstream.annotations import Annotation, load_annotation
from snps3_ds.downstream.texts import TaskTexts, task_texts
from snps3_ds.engine.base import share_cpu_threads
from snps3_ds.evaluation.embeddings import export_embeddings
from snps3_ds.evaluation.features import EvalFeatures
from snps3_ds.evaluation.mcqa import evaluate_mcqa
from snps3_ds.evaluation.metrics import metric_key
from snps3_ds.evaluation.qa import QuestionType, evaluate_qa
from snps3_ds.evaluation.qa_zero_shot import DEFAULT_TEMPLATE, TEMPLATES, evaluate_qa_zero_shot, resolve_template
from snps3_ds.evaluation.report import log_table, start_wandb
from snps3_ds.evaluation.retrieval import RetrievalOptions, run_retrieval
from snps3_ds.evaluation.weights import load_weights, read_task_state
from snps3_ds.models.factory import build_model, build_tokenizer
from snps3_ds.tasks.qa import QATask

ORDER = ["t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MdR", "t2v/MnR", "v2t/R@1", "v2t/R@5", "v2t/R@10", "v2t/MdR", "v2t/MnR"]


def parse_args(argv: list[str] | None = None):
    parser = _setup.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint folder (with `latest`), one tag folder, a .safetensors "
                                             "file or an export folder; omit to evaluate the untrained model")
    parser.add_argument("--out", help="write the metrics here as JSON")
    parser.add_argument("--baseline", help="a JSON written earlier by --out, printed beside these results")
    parser.add_argument("--task", choices=["retrieval", "qa", "mcqa"], help="default: the annotation's task, "
                                                                           "else retrieval")
    parser.add_argument("--annotation", help="annotation JSON (snps3_ds.downstream.annotations) of the split")
    parser.add_argument("--rerank", type=int, default=0, metavar="K",
                        help="retrieval: re-rank each query's top-K with the fusion scorer (0: off)")
    parser.add_argument("--fusion-exhaustive", action="store_true",
                        help="retrieval: also fusion-score every text-video pair, as the reference does")
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
    parser.add_argument("--local_rank", type=int, default=0, help="set by the deepspeed launcher")
    return parser.parse_args(argv)


def start_processes() -> tuple[int, int, int, torch.device]:
    """(rank, world size, local world size, device); torch.distributed from the launcher's environment
    (deepspeed / torchrun set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # all_gather_object on NCCL uses the current device
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", world)))
    return rank, world, local_world, device


def resolve_task(args, annotation: Annotation | None) -> str:
    task = args.task or (annotation.task if annotation else "retrieval")
    if annotation is not None and annotation.task != task:
        raise ValueError(f"--task {task} but {args.annotation} is a {annotation.task!r} annotation")
    if task != "retrieval" and annotation is None:
        raise ValueError(f"--task {task} needs --annotation (the questions and answers of the split)")
    if task != "retrieval" and (args.rerank or args.fusion_exhaustive or args.export_embeddings):
        raise ValueError("--rerank, --fusion-exhaustive and --export-embeddings apply to --task retrieval only")
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


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    cfg = _setup.load_run_config(args)
    rank, world, local_world, device = start_processes()
    share_cpu_threads(local_world)
    if rank == 0:
        _setup.ensure_demo_data(cfg)
    if world > 1:
        dist.barrier()
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
    elif protocol == "classifier" and rank == 0:
        print("no --checkpoint: the answer classifier is untrained (chance-level QA; --qa-zero-shot matches "
              "answers with the retrieval similarity instead)", flush=True)
    module.to(device)
    clips = cfg.eval.num_clips or cfg.data.num_clips
    texts = task_texts(annotation, train=False) if annotation else None
    loader = build_eval_loader(cfg.data, tokenizer, cfg.eval.batch_size, clips, texts=texts)
    split = annotation.split if annotation else ""
    if task == "retrieval":
        metrics, extra = evaluate_retrieval_task(args, model, loader, texts, tokenizer, split,
                                                 clips if annotation else None, device, rank, world)
    elif task == "qa":
        metrics, extra = evaluate_qa_task(args, protocol, module, loader, annotation, texts, tokenizer, clips,
                                          device, rank, world)
    else:
        result = evaluate_mcqa(model, loader, float(model.temperature()), split, clips, device, rank, world)
        metrics, extra = result.metrics, {"records": result.records}
    if rank == 0:
        report(args, cfg, task, split, metrics, extra)
    if world > 1:  # leave the group together (a group torn down at interpreter exit can abort the process)
        dist.barrier()
        dist.destroy_process_group()
    return metrics


def load_checkpoint(module: torch.nn.Module, path: str) -> None:
    """`model.*` into the SNP model; for QA also `head.*` into the classifier (from a QA fine-tune)."""
    load_state(module, read_task_state(path), path)


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """load_checkpoint with the task state already read (the QA protocol is chosen from its keys)."""
    if isinstance(module, QATask):
        load_weights(module.model, state, "model.", path)
        if not any(k.startswith("head.") for k in state):
            raise ValueError(f"{path}: no `head.*` weights; QA evaluation needs a QA fine-tuned checkpoint "
                             "(the answer classifier is trained there)")
        load_weights(module.head, state, "head.", path)
    else:
        load_weights(module, state, "model.", path)


def evaluate_qa_task(args, protocol: str, module, loader, annotation: Annotation, texts: TaskTexts, tokenizer,
                     clips: int, device: torch.device, rank: int, world: int) -> tuple[dict[str, float], dict]:
    """The classifier head's accuracy, or zero-shot answer matching; says on rank 0 which one ran."""
    types = question_types(annotation, args)
    if protocol == "classifier":
        if rank == 0:
            print(f"QA protocol: fine-tuned classifier head over {len(annotation.answers)} answers", flush=True)
        result = evaluate_qa(module, loader, annotation.split, clips, device, rank, world, types)
        return result.metrics, {"qa_protocol": protocol, "records": result.records}
    template = resolve_template(args.qa_template or DEFAULT_TEMPLATE)
    if rank == 0:
        scorers = "dual encoder + fusion scorer" if args.qa_fusion else "dual encoder"
        print(f"QA protocol: zero-shot answer matching ({len(annotation.answers)} answers as statements "
              f"{template!r}, {scorers})", flush=True)
    result = evaluate_qa_zero_shot(module, loader, annotation.answers, annotation.split, clips, device, rank, world,
                                   template, args.qa_fusion, types, tokenizer=tokenizer,
                                   question_of=lambda video, order: texts.texts_of(video)[order])
    return result.metrics, {"qa_protocol": protocol, "qa_template": template, "records": result.records}


def evaluate_retrieval_task(args, model, loader, texts: TaskTexts | None, tokenizer, split: str,
                            clips: int | None, device: torch.device, rank: int, world: int
                            ) -> tuple[dict[str, float], dict]:
    options = RetrievalOptions(split=split, num_clips=clips, rerank_k=args.rerank, exhaustive=args.fusion_exhaustive,
                               worst=args.worst)
    text_of = functools.partial(describe_text, texts=texts, tokenizer=tokenizer)
    result = run_retrieval(model, loader, float(model.temperature()), options, device, rank, world, text_of=text_of)
    metrics = result.metrics
    if args.export_embeddings and rank == 0:
        export_embeddings(result.features, args.export_embeddings, float(model.temperature()), text_of)
        print(f"embeddings written to {args.export_embeddings}", flush=True)
    return metrics, {"worst": result.worst}


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


def report(args, cfg: RunConfig, task: str, split: str, metrics: dict[str, float], extra: dict) -> None:
    """Rank 0: table to stdout, JSON to --out, and W&B (scalars + table) when enabled."""
    label = "trained" if args.checkpoint else "untrained"
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    print(format_table(metrics, label, baseline, table_keys(metrics, task, split)), flush=True)
    if task == "retrieval":
        n_videos, n_texts = metrics[metric_key(split, "num_videos")], metrics[metric_key(split, "num_texts")]
        print(f"{int(n_videos)} test videos, {int(n_texts)} captions; "
              f"chance R@1 = {metrics[metric_key(split, 'chance_R@1')]:.2f}%", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "task": task, "split": split,
                                              "metrics": metrics, **extra}, indent=2))
    run = start_wandb(cfg.logging, f"{cfg.logging.run_name or Path(cfg.train.run_dir).name}-eval-{split or task}",
                      {**to_dict(cfg), "eval": {"task": task, "checkpoint": args.checkpoint}})
    if run is not None:
        run.log(metrics)
        log_table(f"{split or 'eval'}/worst_queries", extra.get("worst", []))
        run.finish()


def table_keys(metrics: dict[str, float], task: str, split: str) -> list[str]:
    if task != "retrieval":
        return [k for k in metrics if not k.endswith("num_questions")]
    clips = next((k.rsplit("@", 1)[1] for k in metrics if k.endswith("clips")), None)
    suffix = f"@{clips}" if clips else ""
    prefix = f"{split}/" if split else ""
    keys = [f"{prefix}{variant}{k}{suffix}" for variant in ("", "rerank/", "fusion/") for k in ORDER]
    return [k for k in keys if k in metrics]


def format_table(metrics: dict[str, float], label: str, baseline: dict | None, keys: list[str] = ORDER) -> str:
    columns = [("before", baseline["metrics"])] if baseline else []
    columns.append(("after" if baseline else label, metrics))
    width = max([12] + [len(k) + 2 for k in keys])
    lines = [f"{'metric':<{width}}" + "".join(f"{name:>12}" for name, _ in columns)]
    for key in keys:
        cells = "".join(f"{values[key]:>12.2f}" if key in values else f"{'-':>12}" for _, values in columns)
        lines.append(f"{key:<{width}}" + cells)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
    sys.exit(0)
