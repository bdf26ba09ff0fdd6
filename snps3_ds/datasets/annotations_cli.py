"""Write a downstream-task annotation file (snps3_ds.downstream.annotations) from a benchmark's public files.

    python data_prep/build_annotations.py FORMAT FILE [FILE] --out OUT.json [--split-name NAME]
        [--answers TRAIN_ANN.json | --top-answers N] [--skip-bad]

FORMAT and its files, in this order (the split name, a metric prefix, comes from the file name unless
--split-name is given):
    msrvtt_train  MSRVTT_train.{7k,9k}.csv MSRVTT_data.json   -> retrieval, msrvtt_{7k,9k}_train
    msrvtt_1ka    MSRVTT_JSFUSION_test.csv                     -> retrieval, msrvtt_1ka
    didemo        {train,val,test}_data.json                   -> retrieval (paragraphs), didemo_<split>
    msvd          AllVideoDescriptions.txt {train,val,test}_list.txt  -> retrieval, msvd_<split>
    msrvtt_qa     {train,val,test}_qa.json                     -> qa, msrvtt_qa_<split>
    msvd_qa       {train,val,test}_qa.json youtube_mapping.txt -> qa, msvd_qa_<split>
    msrvtt_mc     MSRVTT_MC_test.json (or .jsonl, or MSR_MC_test.csv)  -> mcqa, msrvtt_mc

QA answer vocabulary: a training file gets the top-N answers of that file (--top-answers, default 1500 for
msrvtt_qa and 1000 for msvd_qa; ties go to the answer seen first). Val/test files must share it:
pass --answers with the training annotation; their answers outside it get label -1 (wrong at test).
The share of questions the vocabulary covers is printed.

Bad rows (missing or malformed fields) stop the run with a message naming file, line/item and key;
--skip-bad leaves them out and prints their count instead.

    python data_prep/build_annotations.py msrvtt_qa train_qa.json --out ann/msrvtt_qa_train.json
    python data_prep/build_annotations.py msrvtt_qa test_qa.json --answers ann/msrvtt_qa_train.json \\
        --out ann/msrvtt_qa_test.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from snps3_ds.datasets import didemo, jsfusion, msrvtt, msvd
from snps3_ds.datasets.base import split_name
from snps3_ds.datasets.qa import coverage
from snps3_ds.downstream.annotations import Annotation, load_annotation, write_annotation

# format -> (the files it takes, in order; the split-name prefix for names read from the first file)
FILES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "msrvtt_train": (("MSRVTT_train.{7k,9k}.csv", "MSRVTT_data.json"), None),
    "msrvtt_1ka": (("MSRVTT_JSFUSION_test.csv",), None),
    "didemo": (("{train,val,test}_data.json",), "didemo"),
    "msvd": (("AllVideoDescriptions.txt", "{train,val,test}_list.txt"), "msvd"),
    "msrvtt_qa": (("{train,val,test}_qa.json",), "msrvtt_qa"),
    "msvd_qa": (("{train,val,test}_qa.json", "youtube_mapping.txt"), "msvd_qa"),
    "msrvtt_mc": (("MSRVTT_MC_test.json",), None),
}
QA_TOP_ANSWERS = {"msrvtt_qa": msrvtt.QA_TOP_ANSWERS, "msvd_qa": msvd.QA_TOP_ANSWERS}


def _split(args: argparse.Namespace) -> str | None:
    """The split name: --split-name, else read from the split-defining file's name (None: reader default)."""
    if args.split_name:
        return args.split_name
    prefix = FILES[args.format][1]
    if prefix is None:
        return None
    named = args.files[1] if args.format == "msvd" else args.files[0]
    return split_name(named, prefix)


def _vocabulary(args: argparse.Namespace, split: str) -> list[str] | None:
    """Answers from --answers, or None to build the top-N of this (training) file."""
    if args.answers is not None:
        train = load_annotation(args.answers)
        if train.task != "qa" or not train.answers:
            raise ValueError(f"--answers {args.answers}: expected a qa annotation with an answer vocabulary")
        return train.answers
    if not split.endswith("_train") and args.top_answers is None:
        raise ValueError(f"split {split!r} is not a training split: pass --answers TRAIN_ANN.json so it "
                         f"shares the training vocabulary (or --top-answers N to build one from this file)")
    return None


def read(args: argparse.Namespace) -> Annotation:
    """Dispatch to the reader of `args.format` with its files and options."""
    f, split, skip = [Path(p) for p in args.files], _split(args), args.skip_bad
    if args.format in ("msrvtt_qa", "msvd_qa"):
        answers = _vocabulary(args, split)
        top_n = QA_TOP_ANSWERS[args.format] if args.top_answers is None else args.top_answers
        if args.format == "msrvtt_qa":
            return msrvtt.read_qa(f[0], split, answers, top_n, skip)
        return msvd.read_qa(f[0], f[1], split, answers, top_n, skip)
    calls: dict[str, Callable[[], Annotation]] = {
        "msrvtt_train": lambda: msrvtt.read_retrieval(f[0], f[1], split, skip),
        "msrvtt_1ka": lambda: jsfusion.read_retrieval(f[0], split or "msrvtt_1ka", skip),
        "didemo": lambda: didemo.read_retrieval(f[0], split, skip),
        "msvd": lambda: msvd.read_retrieval(f[0], f[1], split, skip),
        "msrvtt_mc": lambda: msrvtt.read_mc(f[0], split or "msrvtt_mc", skip),
    }
    return calls[args.format]()


def summary(ann: Annotation) -> dict[str, Any]:
    """Counts worth printing: items, videos, texts, and for QA the vocabulary and its coverage."""
    out: dict[str, Any] = {"task": ann.task, "split": ann.split, "items": len(ann.items),
                           "videos": len(ann.by_video())}
    if ann.task == "retrieval":
        out["texts"] = sum(len(item["texts"]) for item in ann.items)
    if ann.task == "qa":
        covered, total = coverage(ann)
        out.update(answers=len(ann.answers or []), covered=covered, coverage=round(covered / total, 4))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("format", choices=sorted(FILES))
    parser.add_argument("files", nargs="+", help="the format's annotation file(s), in the order listed below")
    parser.add_argument("--out", type=Path, required=True, help="annotation JSON to write")
    parser.add_argument("--split-name", help="metric prefix (default: from the file name)")
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument("--answers", type=Path, help="qa: the training annotation whose vocabulary to use")
    vocab.add_argument("--top-answers", type=int, help="qa: vocabulary size built from this file")
    parser.add_argument("--skip-bad", action="store_true", help="leave out bad rows instead of stopping")
    args = parser.parse_args(argv)
    expected = FILES[args.format][0]
    if len(args.files) != len(expected):
        parser.error(f"{args.format} takes {len(expected)} file(s): {' '.join(expected)} "
                     f"(got {len(args.files)})")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        ann = read(args)
        write_annotation(args.out, ann)
    except ValueError as err:  # ManifestError, AnnotationError
        raise SystemExit(f"error: {err}") from None
    info = summary(ann)
    line = f"wrote {args.out}: {info['task']} {info['split']}, {info['items']} items, {info['videos']} videos"
    if "answers" in info:
        line += (f"; vocabulary {info['answers']} answers covers {info['covered']}/{info['items']} "
                 f"questions ({100 * info['coverage']:.1f}%)")
    print(line)
    return info
