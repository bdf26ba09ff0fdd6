"""Parameter counts of the model a recipe builds: total and per module (tied tensors once), the SNP vs P3E
saving, and the paper's Table II. Models are built on the meta device (shapes only, nothing allocated)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from snps3_ds.models.params import (TABLE2, TABLE2_MODEL, build_on_meta, countable_config, module_counts,
                                    momentum_copy_count, table2_counts)
from snps3_ds.models.snp import TEXT_SIZES
from snps3_ds.run import cli

DESCRIPTION = "Count the parameters of the model a recipe builds"
PVT_HEAD = 513_000  # pvt_v2_b2's 1000-class classifier: kept (unused) by the reference, not built here


def parse_args(argv: list[str] | None = None, description: str = DESCRIPTION) -> argparse.Namespace:
    parser = cli.base_parser(description)
    parser.add_argument("--text-size", choices=sorted(TEXT_SIZES), help="random-init text BERT of this size")
    parser.add_argument("--compare-fusion", action="store_true",
                        help="count model.fusion=shared (SNP) and separate (P3E), print SNP's saving")
    parser.add_argument("--table2", action="store_true", help="the four Table II models vs the paper")
    return parser.parse_args(argv)


def print_counts(title: str, counts: dict[str, int]) -> int:
    total = sum(counts.values())
    print(f"{title}: {total:,} parameters ({total / 1e6:.2f} M)")
    for name, count in counts.items():
        print(f"  {name:<22}{count:>14,}  {100 * count / total:5.1f}%")
    return total


def print_table2() -> None:
    counts = table2_counts()
    print("Table II (BERT-base from a config; temporal_layers=3 and both MLM heads, as the paper's counts; "
          f"frozen-BN ResNet-50): {TABLE2_MODEL['text_config']}")
    print(f"{'model':<12}{'ours (M)':>12}{'paper (M)':>12}{'diff':>9}")
    for (backbone, fusion), paper in TABLE2.items():
        ours = counts[(backbone, fusion)] / 1e6
        name = f"{'SNP' if fusion == 'shared' else 'P3E'}-{'R50' if backbone == 'resnet50' else 'PVT'}"
        print(f"{name:<12}{ours:>12.2f}{paper:>12.1f}{100 * (ours - paper) / paper:>8.2f}%")
    for backbone in ("resnet50", "pvt_v2_b2"):
        snp, p3e = counts[(backbone, "shared")], counts[(backbone, "separate")]
        print(f"SNP saving vs P3E ({backbone}): {100 * (p3e - snp) / p3e:.1f}%  (paper: 22%)")
    print(f"PVT rows: the reference also counts pvt_v2_b2's unused 1000-class head (+{PVT_HEAD / 1e6:.3f} M -> "
          f"{(counts[('pvt_v2_b2', 'shared')] + PVT_HEAD) / 1e6:.2f} / "
          f"{(counts[('pvt_v2_b2', 'separate')] + PVT_HEAD) / 1e6:.2f} M); we do not build it.")


def main(argv: list[str] | None = None, description: str = DESCRIPTION) -> None:
    args = parse_args(argv, description)
    if args.table2:
        print_table2()
        return
    try:
        cfg = countable_config(cli.load_run_config(args).model, args.text_size)
    except FileNotFoundError as err:  # a recipe's placeholder text model: its shape can still be named
        sys.exit(f"{err}\nto count without it, name the text size: --text-size bert-base")
    fusions = ("shared", "separate") if args.compare_fusion else (cfg.fusion,)
    totals = {}
    for fusion in fusions:
        model = build_on_meta(dataclasses.replace(cfg, fusion=fusion))
        label = f"{'SNP' if fusion == 'shared' else 'P3E'} ({cfg.visual_backbone}, fusion={fusion})"
        totals[fusion] = print_counts(label, module_counts(model))
    keys = momentum_copy_count(model)
    print(f"MoCo key encoders, if objectives.contrastive_queue > 0: +{keys:,} untrained parameters")
    if args.compare_fusion:
        saving = totals["separate"] - totals["shared"]
        print(f"SNP saves {saving:,} parameters vs P3E: {100 * saving / totals['separate']:.1f}% of P3E")
