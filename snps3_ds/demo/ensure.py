"""The demo recipe's data, built on first use: the corpus, its significant-word table, its task files.

A recipe with `data.make_demo_if_missing: true` names shards (and task annotations) in one folder; what is
missing there is made before training or evaluation reads it. Call on one process only (rank 0) and
barrier afterwards.
"""

from __future__ import annotations

from pathlib import Path

from snps3_ds.config import DataConfig, MaskingConfig, RunConfig


def ensure_demo_data(cfg: RunConfig) -> None:
    ensure_demo_corpus(cfg.data)
    ensure_demo_significance(cfg.data, cfg.masking)
    ensure_demo_tasks(cfg)


def ensure_demo_tasks(cfg: RunConfig) -> None:
    """Write the demo corpus's task annotations when a demo recipe names missing ones in <corpus>/tasks/."""
    wanted = [p for p in [cfg.task.train_annotation, *cfg.task.eval_annotations, *cfg.task.joint_weight_annotations]
              if p]
    if not (cfg.data.make_demo_if_missing and wanted) or all(Path(p).is_file() for p in wanted):
        return
    folders = {Path(p).parent for p in wanted}
    if len(folders) != 1 or next(iter(folders)).name != "tasks":
        raise ValueError(f"data.make_demo_if_missing: demo task files must sit in one <corpus>/tasks folder, "
                         f"got {sorted(map(str, folders))}")
    from snps3_ds.demo.tasks import make_demo_tasks

    corpus = next(iter(folders)).parent
    print(f"writing the demo task annotations in {corpus / 'tasks'} ...", flush=True)
    make_demo_tasks(corpus)


def ensure_demo_significance(data: DataConfig, masking: MaskingConfig) -> None:
    """Mine the significance table from the training shards when the demo recipe names a missing one."""
    if not (data.make_demo_if_missing and masking.significance_dir):
        return
    from snps3_ds.mining.mine import DEFAULT_ABANDON, ensure_table

    # As the reference does for WebVid, "background(s)" is abandoned: it is in most demo captions
    # and names no object to ground.
    ensure_table(data.train_shards, masking.significance_dir, workers=1, progress=False,
                 abandon=(*DEFAULT_ABANDON, "background", "backgrounds"))


DEMO_SPLIT_SIZES = {"train": 2000, "test": 200, "val": 200}


def ensure_demo_corpus(data: DataConfig) -> None:
    """Build the demo corpus's missing splits when the recipe asks for it: only those whose shard index is
    missing, so adding the val split to an existing corpus leaves its train and test shards as they are."""
    if not data.make_demo_if_missing:
        return
    specs = [*data.train_shards, *data.eval_shards]
    indexes = [Path(s if s.endswith(".shards.json") else s + ".shards.json") for s in specs]
    if all(p.is_file() for p in indexes):
        return
    folders = {p.parent for p in indexes}
    if len(folders) != 1:
        raise ValueError(f"data.make_demo_if_missing: shards must share one folder, got {sorted(map(str, folders))}")
    from snps3_ds.demo.corpus import make_demo_corpus

    missing = {p.name.removesuffix(".shards.json") for p in indexes if not p.is_file()}
    unknown = sorted(missing - DEMO_SPLIT_SIZES.keys())
    if unknown:
        raise ValueError(f"data.make_demo_if_missing: no demo split is called {', '.join(unknown)} (the demo "
                         f"corpus has {', '.join(DEMO_SPLIT_SIZES)}); build it or fix the recipe's shard paths")
    out = folders.pop()
    counts = {name: n if name in missing else 0 for name, n in DEMO_SPLIT_SIZES.items()}
    print(f"building the demo corpus in {out} ({', '.join(sorted(missing))}) ...", flush=True)
    make_demo_corpus(out, **counts)
