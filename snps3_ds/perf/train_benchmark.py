"""Training-step benchmark: plain DDP against DeepSpeed ZeRO-1 / ZeRO-2 / ZeRO-2 + CPU offload.

Why a separate set of processes per mode: peak memory (RSS, or CUDA's max_memory_allocated) is a
per-process high-water mark, so each mode needs fresh ranks for its figure to mean anything; a fresh
rendezvous port per mode keeps one failing mode from blocking the next.

Why fixed in-memory batches: the benchmark measures the training step (forward, backward, gradient
reduction, optimiser), not data loading (that is `benchmark.py data`). Each rank builds one batch
before the model (synthetic with the recipe's shapes, or one real batch from the training loader)
and feeds it to every step.

Every mode uses the same recipe, seed, AdamW parameter groups, clipping, micro-batch and accumulation;
the DeepSpeed modes differ only in their ds_config (built in memory from a base ds_config, written to
the work folder and read back through `load_ds_config`, the path training takes). `ddp` is torch's
DistributedDataParallel with the ds_config's precision as autocast (bf16 keeps fp32 weights), while
DeepSpeed's bf16 keeps bf16 weights plus fp32 master partitions: both are what a user would run.

Parent side: `run_benchmark`. Rank side: `python -m snps3_ds.perf.train_benchmark SPEC.json`, started
with RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_SIZE/MASTER_ADDR/MASTER_PORT, writes rank<r>.json beside SPEC.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from snps3_ds.config import RunConfig, load_config
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.processes import free_port, shut_down, start_processes
from snps3_ds.engine.base import Engine
from snps3_ds.engine.ds_config import load_ds_config
from snps3_ds.engine.factory import make_engine
from snps3_ds.engine.steps import StepRequest, optimiser_step, plans_steps
from snps3_ds.perf.cpu_features import bf16_warning

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MODE_PATTERN = re.compile(r"^(ddp|zero([0-3])(_offload)?)$")
MB = 2 ** 20


# ------------------------------------------------------------------------------------------------------
# Modes: ds_config variants built in memory from the base ds_config
# ------------------------------------------------------------------------------------------------------

def mode_ds_config(base: dict[str, Any], mode: str, micro: int, accum: int | None = None) -> dict[str, Any]:
    """The base ds_config with this mode's ZeRO stage and offload, and the benchmark's micro-batch.

    `ddp` keeps the base's precision/clipping/accumulation (read by the DDP engine) but is never given
    to DeepSpeed, so its ZeRO section does not matter.
    """
    match = MODE_PATTERN.match(mode)
    if match is None:
        raise ValueError(f"unknown mode {mode!r}: expected ddp, zero0..zero3 or zeroN_offload")
    raw = copy.deepcopy(base)
    raw["train_micro_batch_size_per_gpu"] = micro
    if accum is not None:
        raw["gradient_accumulation_steps"] = accum
    zero = raw.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    zero.pop("offload_param", None)
    if match.group(2) is not None:
        zero["stage"] = int(match.group(2))
    if match.group(3):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return raw


# ------------------------------------------------------------------------------------------------------
# Rank side: batch, engines, timing, memory
# ------------------------------------------------------------------------------------------------------

COLOURS, SHAPES, MOTIONS = ("red", "green", "blue", "yellow"), ("circle", "square", "star", "triangle"), (
    "moves to the left", "moves to the right", "jumps up", "spins around")


def synthetic_batch(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, micro: int, rank: int) -> VideoTextBatch:
    """A VideoTextBatch with the recipe's shapes: random frames, demo-like captions, BERT masking,
    and LVWM word positions when that objective is on. Seeded by (seed, rank): ranks differ, runs repeat."""
    from snps3_ds.data.text.tokens import SpecialIds, mlm_mask, tokenize

    rng, gen = random.Random(f"{cfg.train.seed}/{rank}"), torch.Generator().manual_seed(cfg.train.seed * 1009 + rank)
    captions = [f"a small {rng.choice(COLOURS)} {rng.choice(SHAPES)} {rng.choice(MOTIONS)}" for _ in range(micro)]
    ids, mask = tokenize(tokenizer, captions, cfg.data.max_text_len)
    masked, labels = mlm_mask(ids, mask, SpecialIds.from_tokenizer(tokenizer), cfg.masking, gen)
    empty = (labels == -100).all(dim=1)  # every caption predicts at least one token, as MSSM's do
    labels[empty, 1], masked[empty, 1] = ids[empty, 1], tokenizer.mask_token_id
    size, clips = cfg.data.image_size, cfg.data.num_clips
    words = None
    if cfg.objectives.lvwm > 0:
        last = (mask.sum(dim=1) - 2).clamp(min=1)[:, None]  # last real word before [SEP]
        words = torch.minimum(torch.arange(1, cfg.masking.word_chosen_num + 1)[None, :], last)
    return VideoTextBatch([f"synthetic-{rank}-{i}" for i in range(micro)],
                          torch.randn(micro, clips, 3, size, size, generator=gen),
                          torch.ones(micro, clips, dtype=torch.bool), ids, mask, torch.arange(micro),
                          masked, labels, words)


def loader_batch(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, micro: int, rank: int,
                 world: int) -> VideoTextBatch:
    """One real batch for this rank from the training loader (decode, transforms, masking), then the
    loader is dropped so its workers do not run during the timed steps."""
    from snps3_ds.data.loader import StreamPlacement, build_train_loader

    batches = build_train_loader(cfg.data, cfg.masking, tokenizer, micro, StreamPlacement(rank, world, cfg.train.seed))
    batch = next(batches)
    del batches
    return batch


def optimizer_bytes(optimizer: Any) -> dict[str, int]:
    """Bytes this rank holds in optimiser state: Adam moments (+ step) of the inner optimiser, and the
    fp32 master partitions ZeRO keeps beside bf16/fp16 weights (0 for DDP: its weights are the fp32 copy)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    moments = sum(t.numel() * t.element_size() for state in inner.state.values() for t in state.values()
                  if torch.is_tensor(t))
    masters = getattr(optimizer, "single_partition_of_fp32_groups", None) or getattr(
        optimizer, "fp32_groups_flat_partition", None) or []
    return {"moments": moments, "master": sum(t.numel() * t.element_size() for t in masters if torch.is_tensor(t))}


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; elsewhere the peak so far, the best stand-in)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MB
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(engine: Engine, batch: VideoTextBatch, warmup: int, steps: int,
                device: torch.device) -> dict[str, Any]:
    """`warmup` untimed then `steps` timed optimiser steps (the trainer's step: every micro-batch of it the
    fixed batch, two passes when the task plans its steps); ranks start the timed part together."""
    def one(step: int) -> float:
        outcome = optimiser_step(StepRequest(engine, lambda: batch, seed=0, step=step))
        return float(outcome.outputs[-1].loss.detach())

    losses = [one(i + 1) for i in range(warmup)]
    sync(device)
    torch.distributed.barrier()
    times, start = [], time.perf_counter()
    for i in range(steps):
        begin = time.perf_counter()
        losses.append(one(warmup + i + 1))
        sync(device)
        times.append(time.perf_counter() - begin)
    return {"step_s": times, "timed_s": time.perf_counter() - start, "losses": losses}


def build_task(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, rank: int,
               world: int) -> tuple[nn.Module, set[str]]:
    """The pre-training task exactly as launch/pretrain.py builds it, seeded the same on every rank."""
    from snps3_ds.models.factory import build_model
    from snps3_ds.models.snp import visual_parameter_names
    from snps3_ds.tasks.pretrain import build_pretrain_task

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, tokenizer)
    task = build_pretrain_task(model, cfg, tokenizer, rank, world)
    return task, {f"model.{name}" for name in visual_parameter_names(model)}


def run_rank(spec: dict[str, Any]) -> dict[str, Any]:
    """One rank of one mode: batch, then (after the memory baseline) model and engine, then the steps."""
    from snps3_ds.models.factory import build_tokenizer

    procs = start_processes()
    rank, world, device = procs.rank, procs.world, procs.device
    torch.set_num_threads(spec["threads"])  # also on GPU: ZeRO-Offload's CPU Adam runs on these threads
    cfg, settings = load_config(spec["recipe"], spec["overrides"]), load_ds_config(spec["ds_config"])
    tokenizer = build_tokenizer(cfg.model)
    micro = settings.micro_batch_size
    batch = (loader_batch(cfg, tokenizer, micro, rank, world) if spec["data"] == "loader"
             else synthetic_batch(cfg, tokenizer, micro, rank)).to(device)
    baseline = current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_baseline = torch.cuda.memory_allocated(device) / MB
    task, visual = build_task(cfg, tokenizer, rank, world)
    params = sum(p.numel() for p in task.parameters() if p.requires_grad)
    total_steps = spec["warmup"] + spec["steps"]
    kind = "torch" if spec["mode"] == "ddp" else "deepspeed"  # torch: DistributedDataParallel with several ranks
    engine = make_engine(kind, task, settings, cfg.optim, total_steps, visual, procs)
    timing = timed_steps(engine, batch, spec["warmup"], spec["steps"], device)
    result = {"rank": rank, **timing, "params": params, "micro": micro, "accum": settings.grad_accum,
              "precision": settings.precision, "zero_stage": settings.zero_stage, "device": str(device),
              "threads": torch.get_num_threads(), "rss_baseline_mb": baseline, "peak_rss_mb": peak_rss_mb(),
              "optimizer_bytes": optimizer_bytes(engine.optimizer), "planned": plans_steps(engine)}
    result["rss_increase_mb"] = result["peak_rss_mb"] - baseline
    if device.type == "cuda":
        result.update(gpu=torch.cuda.get_device_name(device),
                      cuda_peak_mb=torch.cuda.max_memory_allocated(device) / MB,
                      cuda_increase_mb=torch.cuda.max_memory_allocated(device) / MB - cuda_baseline)
    return result


def rank_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = run_rank(spec)
    Path(spec_path).with_name(f"rank{result['rank']}.json").write_text(json.dumps(result))
    shut_down(int(os.environ["WORLD_SIZE"]))  # nobody tears the group down while a peer is still measuring


# ------------------------------------------------------------------------------------------------------
# Parent side: start the ranks of each mode, summarise, print
# ------------------------------------------------------------------------------------------------------

@dataclass
class BenchOptions:
    """What `benchmark.py train` asks for; every mode gets the same."""

    recipe: str
    overrides: list[str]
    base_ds_config: str
    modes: list[str]
    world: int
    steps: int
    warmup: int
    micro: int
    data: str  # "synthetic" | "loader"
    work_dir: Path
    timeout_s: float
    accums: list[int | None] = field(default_factory=lambda: [None])  # None: the base ds_config's accumulation
    negatives: list[str | None] = field(default_factory=lambda: [None])  # objectives.negatives; None: the recipe's


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def rank_env(rank: int, world: int, port: int, threads: int) -> dict[str, str]:
    """What a launcher would set, plus the per-rank thread budget."""
    env = dict(os.environ)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_SIZE=str(world),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
    return env


def launch_ranks(spec_path: Path, world: int, threads: int, timeout_s: float) -> list[dict[str, Any]]:
    """Run the ranks of one mode; on the first failure (or the time limit) stop the others and raise
    with the failing rank's error line, so the next mode still runs."""
    port, folder = free_port(), spec_path.parent
    procs = []
    for rank in range(world):
        log = open(folder / f"rank{rank}.log", "w")  # noqa: SIM115 - closed when the process is done
        procs.append((subprocess.Popen([sys.executable, "-m", "snps3_ds.perf.train_benchmark", str(spec_path)],
                                       env=rank_env(rank, world, port, threads), stdout=log,
                                       stderr=subprocess.STDOUT), log))
    try:
        failure = wait_all([p for p, _ in procs], time.monotonic() + timeout_s)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    if failure is not None:
        rank, reason = failure
        raise RuntimeError(f"rank {rank} {reason}: {error_line(folder / f'rank{rank}.log')}")
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(world)]


def wait_all(procs: list[subprocess.Popen], deadline: float) -> tuple[int, str] | None:
    """None when every rank exits 0; else (rank, what happened) for the first one that did not."""
    while any(p.poll() is None for p in procs):
        for rank, proc in enumerate(procs):
            if proc.poll() not in (None, 0):
                return rank, f"exited {proc.returncode}"
        if time.monotonic() > deadline:
            return next(r for r, p in enumerate(procs) if p.poll() is None), "timed out"
        time.sleep(0.2)
    bad = [r for r, p in enumerate(procs) if p.returncode != 0]
    return (bad[0], f"exited {procs[bad[0]].returncode}") if bad else None


def error_line(log: Path) -> str:
    """The last `SomethingError: ...` line of a rank's log, else its last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line)]
    return (errors or lines or ["(no output)"])[-1][:300]


def summarise(mode: str, ranks: list[dict[str, Any]], steps: int, negatives: str | None = None) -> dict[str, Any]:
    """One table row from the ranks' figures: pooled step times, global samples/s over the slowest
    rank's timed wall clock, and the worst rank's memory (ZeRO's ranks are near-equal anyway)."""
    times = [t for r in ranks for t in r["step_s"]]
    first = ranks[0]
    global_batch = first["micro"] * first["accum"] * len(ranks)
    row = {"mode": mode, "world": len(ranks), "micro": first["micro"], "accum": first["accum"],
           "precision": first["precision"], "device": first["device"], "threads_per_rank": first["threads"],
           "params": first["params"], "global_batch": global_batch,
           "step_ms_mean": 1e3 * statistics.fmean(times), "step_ms_std": 1e3 * statistics.pstdev(times),
           "step_ms_median": 1e3 * statistics.median(times),
           "samples_per_s": global_batch * steps / max(r["timed_s"] for r in ranks),
           "loss_first": first["losses"][0], "loss_last": first["losses"][-1],
           "negatives": negatives or "recipe", "planned": first["planned"],
           "negatives_per_step": global_batch if first["planned"] else first["micro"] * len(ranks)}
    for key in ("peak_rss_mb", "rss_increase_mb", "rss_baseline_mb", "cuda_peak_mb", "cuda_increase_mb"):
        if key in first:
            row[key] = max(r[key] for r in ranks)
    row["optimizer_state_mb"] = max(r["optimizer_bytes"]["moments"] for r in ranks) / MB
    row["master_weights_mb"] = max(r["optimizer_bytes"]["master"] for r in ranks) / MB
    row["per_rank"] = [{k: r[k] for k in r if k not in ("step_s", "losses")} for r in ranks]
    if "gpu" in first:
        row["gpu"] = first["gpu"]
    return row


@dataclass(frozen=True)
class Row:
    """One measured configuration: a strategy mode, an accumulation, a negatives choice."""

    mode: str
    accum: int | None = None
    negatives: str | None = None

    @property
    def name(self) -> str:
        return self.mode + (f"_a{self.accum}" if self.accum else "") + (f"_{self.negatives}" if self.negatives else "")


def run_mode(opts: BenchOptions, row: Row, base: dict[str, Any], threads: int) -> dict[str, Any]:
    """Write this row's ds_config and spec into its folder, check the ds_config the way training does, run
    the ranks, summarise; any failure becomes an error row."""
    folder = opts.work_dir / row.name
    folder.mkdir(parents=True, exist_ok=True)
    try:
        ds_path = folder / "ds_config.json"
        ds_path.write_text(json.dumps(mode_ds_config(base, row.mode, opts.micro, row.accum), indent=1))
        load_ds_config(ds_path)
        overrides = [*opts.overrides, *([f"objectives.negatives={row.negatives}"] if row.negatives else [])]
        spec = {"mode": row.mode, "recipe": opts.recipe, "overrides": overrides, "ds_config": str(ds_path),
                "steps": opts.steps, "warmup": opts.warmup, "data": opts.data, "threads": threads}
        (folder / "spec.json").write_text(json.dumps(spec, indent=1))
        ranks = launch_ranks(folder / "spec.json", opts.world, threads, opts.timeout_s)
        return summarise(row.mode, ranks, opts.steps, row.negatives)
    except Exception as err:  # noqa: BLE001 - a failing mode is reported in its row; the others still run
        return {"mode": row.mode, "world": opts.world, "micro": opts.micro, "error": f"{type(err).__name__}: {err}"}


def machine_info(world: int) -> dict[str, Any]:
    """The CPU (and, from the ranks, the GPU) the figures were taken on."""
    from importlib.metadata import version

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = usable_cores()
    return {"cpu": model, "cores": cores, "threads_per_rank": max(1, cores // world), "torch": torch.__version__,
            "deepspeed": version("deepspeed"), "cuda": torch.cuda.is_available()}


def with_ratios(rows: list[dict[str, Any]]) -> None:
    """samples/s of each mode over ddp's, and a global-negatives step's time and memory over the plain step of
    the same mode and accumulation (negatives=micro), all measured in this same run."""
    ddp = next((r for r in rows if r["mode"] == "ddp" and "samples_per_s" in r), None)
    ok = [r for r in rows if "samples_per_s" in r]
    for row in ok:
        if ddp is not None:
            row["vs_ddp"] = row["samples_per_s"] / ddp["samples_per_s"]
        plain = next((r for r in ok if r["mode"] == row["mode"] and r["accum"] == row["accum"] and not r["planned"]),
                     None)
        if plain is not None and row["planned"]:
            memory = "cuda_increase_mb" if "cuda_increase_mb" in row else "rss_increase_mb"
            row["time_vs_plain"] = row["step_ms_mean"] / plain["step_ms_mean"]
            row["memory_vs_plain"] = row[memory] / max(plain[memory], 1e-9)


def run_benchmark(opts: BenchOptions) -> dict[str, Any]:
    """Every mode in turn; prints each row's result as it lands, then the table."""
    base = json.loads(Path(opts.base_ds_config).read_text())
    warning = bf16_warning(load_ds_config(opts.base_ds_config).precision,
                           "cuda" if torch.cuda.is_available() else "cpu", opts.base_ds_config)
    if warning:
        print(warning, flush=True)
    machine = machine_info(opts.world)
    threads = machine["threads_per_rank"]
    rows = []
    for row in [Row(m, a, n) for m in opts.modes for a in opts.accums for n in opts.negatives]:
        print(f"[{row.name}] {opts.world} ranks, {opts.warmup} warm-up + {opts.steps} timed steps ...", flush=True)
        rows.append(run_mode(opts, row, base, threads))
        print(f"[{row.name}] " + (rows[-1].get("error") or f"{rows[-1]['samples_per_s']:.2f} samples/s"), flush=True)
    with_ratios(rows)
    gpus = [r["gpu"] for r in rows if "gpu" in r]
    machine["gpu"] = gpus[0] if gpus else None
    results = {"machine": machine, "options": {**opts.__dict__, "work_dir": str(opts.work_dir)}, "rows": rows}
    print_table(results)
    return results


def _memory_cells(row: dict[str, Any]) -> str:
    if "cuda_peak_mb" in row:
        return f"{row['cuda_peak_mb']:>10.0f}{row['cuda_increase_mb']:>9.0f}"
    return f"{row['peak_rss_mb']:>10.0f}{row['rss_increase_mb']:>9.0f}"


def print_table(results: dict[str, Any]) -> None:
    machine, opts, rows = results["machine"], results["options"], results["rows"]
    where = machine["gpu"] or (f"{machine['cpu']}, {machine['cores']} cores, "
                               f"{machine['threads_per_rank']} torch threads/rank")
    print(f"\ntrain-step benchmark on {where}; torch {machine['torch']}, deepspeed {machine['deepspeed']}")
    ok = [r for r in rows if "error" not in r]
    if ok:
        first = ok[0]
        print(f"recipe {opts['recipe']} {' '.join(opts['overrides'])}; base ds_config {opts['base_ds_config']} "
              f"({first['precision']}); {first['params'] / 1e6:.2f} M trained parameters; "
              f"{opts['warmup']} warm-up + {opts['steps']} timed steps")
    source = ("one real batch per rank from the training loader" if opts["data"] == "loader"
              else "synthetic (random frames, demo-like captions, BERT masking)")
    print(f"batches: {source}, built before the model and reused every step: data loading is not timed")
    mem = "GPU" if machine["gpu"] else "RSS"
    print(f"{'mode':<15}{'world':>6}{'micro':>6}{'accum':>6}{'negatives':>10}{'step ms':>18}{'samples/s':>11}"
          f"{'x ddp':>7}{'peak ' + mem:>10}{'+' + mem:>9}{'optim MB':>10}{'master MB':>10}{'x plain t':>10}"
          f"{'x plain m':>10}   (memory: MB per rank, worst rank)")
    for row in rows:
        if "error" in row:
            label = "offload: unavailable" if row["mode"].endswith("_offload") else "failed"
            print(f"{row['mode']:<15}{row['world']:>6}{row['micro']:>6}   {label} ({row['error']})")
            continue
        step = f"{row['step_ms_mean']:.1f} ± {row['step_ms_std']:.1f}"
        cells = [f"{row[k]:.2f}" if k in row else "-" for k in ("vs_ddp", "time_vs_plain", "memory_vs_plain")]
        print(f"{row['mode']:<15}{row['world']:>6}{row['micro']:>6}{row['accum']:>6}{row['negatives_per_step']:>10}"
              f"{step:>18}{row['samples_per_s']:>11.2f}{cells[0]:>7}{_memory_cells(row)}"
              f"{row['optimizer_state_mb']:>10.1f}{row['master_weights_mb']:>10.1f}{cells[1]:>10}{cells[2]:>10}")
    print(f"negatives: per step (global negatives see micro x accumulation x world, per-micro-batch ones micro x "
          f"world); +{mem}: peak minus the rank's pre-model baseline; optim MB: Adam moments on the rank; master MB: "
          "ZeRO's fp32 master partition; x plain t/m: step time / +memory over the same mode and accumulation "
          "with negatives=micro")


if __name__ == "__main__":
    rank_main(sys.argv[1])
