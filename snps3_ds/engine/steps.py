"""One optimiser step: k micro-batches through the engine, plainly or in two passes for a planning task.

Randomness follows the data, not the process layout: before each micro-batch torch is seeded from (run seed,
step, global micro-batch index = micro x world + rank, the stream's dealing order), so a run reproduces its
dropout on any number of ranks that keeps the micro-batch size, and the two passes of a planned step see the
same dropout. The accumulation
boundary is marked explicitly on the last micro-batch of the step (ZeRO-2 resets its gradient accumulator at
a boundary, so relying on a counter that a skipped micro-batch shifts would drop gradients).

Plain: micro-batch after micro-batch; one that is not finite on any rank is skipped by every rank and
replaced by the next one. Planned (snps3_ds.tasks.base.StepPlanningTask): the step's k micro-batches are
fetched first; pass 1 (no gradient) and the task's plan; a plan whose losses are not finite on any rank skips
the whole step on every rank; then pass 2 with the plan. A task with a schedule over steps
(snps3_ds.tasks.base.StepScheduledTask) is told the step first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.seeds import stream_seed
from snps3_ds.engine.base import Engine
from snps3_ds.engine.faults import agree_any, nonfinite_terms
from snps3_ds.tasks.base import StepPlanningTask, StepScheduledTask, TaskOutput

Trace = Callable[[int, VideoTextBatch, TaskOutput, bool], None]  # (micro, batch, output, skipped)


@dataclass
class StepRequest:
    """What one optimiser step needs from the trainer."""

    engine: Engine
    fetch: Callable[[], VideoTextBatch]
    seed: int  # the run seed
    step: int  # the optimiser step being made, 1-based
    stop_requested: Callable[[], bool] = lambda: False
    poison: Callable[[int, TaskOutput], TaskOutput] = lambda micro, out: out  # fault drills
    trace: Trace | None = None


@dataclass
class StepOutcome:
    outputs: list[TaskOutput] = field(default_factory=list)  # the micro-batches that went into the update
    skipped: list[tuple[list[str], VideoTextBatch]] = field(default_factory=list)  # (bad terms, batch) on ANY rank
    stop: bool = False  # every rank agreed to stop after this step
    waited: float = 0.0  # seconds spent waiting for batches
    stepped: bool = False  # an optimiser step happened (planned steps can be skipped whole)


def plans_steps(engine: Engine) -> bool:
    module = engine.module
    return isinstance(module, StepPlanningTask) and module.plans_steps(engine.grad_accum)


def seed_micro(request: StepRequest, micro: int) -> None:
    """Micro-batch `micro` of this rank is the step's global micro-batch micro x world + rank: the one the
    training stream deals it (snps3_ds.data.stream.reader), so the seed follows the samples."""
    global_micro = micro * request.engine.world_size + request.engine.rank
    torch.manual_seed(stream_seed(request.seed, request.step, global_micro) % (1 << 63))


def _fetch(request: StepRequest, outcome: StepOutcome) -> VideoTextBatch:
    start = time.perf_counter()
    batch = request.fetch()
    outcome.waited += time.perf_counter() - start
    return batch


def plain_step(request: StepRequest) -> StepOutcome:
    """Micro-batches until k of them went into one optimiser step."""
    engine, outcome = request.engine, StepOutcome()
    planning = isinstance(engine.module, StepPlanningTask)
    attempt = 0
    while len(outcome.outputs) < engine.grad_accum:
        batch = _fetch(request, outcome)
        seed_micro(request, attempt)
        engine.set_boundary(len(outcome.outputs) == engine.grad_accum - 1)
        out = engine.forward(batch, micro=len(outcome.outputs)) if planning else engine.forward(batch)
        out = request.poison(attempt, out)
        bad = nonfinite_terms(out)
        any_bad, any_stop = agree_any([bool(bad), request.stop_requested()], engine.world_size)
        outcome.stop = outcome.stop or any_stop
        if request.trace:
            request.trace(attempt, batch, out, any_bad)
        attempt += 1
        if any_bad:
            outcome.skipped.append((bad, batch))
            continue
        engine.backward(out.loss)
        outcome.stepped = engine.step()
        outcome.outputs.append(out)
    return outcome


def planned_step(request: StepRequest) -> StepOutcome:
    """The step's k micro-batches in two passes; skipped whole when the plan is not finite on any rank."""
    engine, outcome = request.engine, StepOutcome()
    module, k = engine.module, engine.grad_accum
    batches = [_fetch(request, outcome) for _ in range(k)]
    features = []
    for micro, batch in enumerate(batches):
        seed_micro(request, micro)
        features.append(engine.without_grad(lambda b, j=micro: module.step_features(b, j), batch))
    plan = module.plan_step(features, stream_seed(request.seed, request.step, 1 << 20))
    values = list(plan.losses.values())
    total = torch.stack([v.float().reshape(()) for v in values]).sum() if values else torch.zeros(())
    probe = request.poison(0, TaskOutput(total, dict(plan.losses)))
    bad = nonfinite_terms(probe)
    any_bad, any_stop = agree_any([bool(bad), request.stop_requested()], engine.world_size)
    outcome.stop = any_stop
    if any_bad:
        outcome.skipped.append((bad, batches[0]))
        return outcome
    for micro, batch in enumerate(batches):
        seed_micro(request, micro)
        engine.set_boundary(micro == k - 1)
        out = engine.forward(batch, plan=plan, micro=micro)
        if request.trace:
            request.trace(micro, batch, out, False)
        engine.backward(out.loss)
        outcome.stepped = engine.step()
        outcome.outputs.append(out)
    return outcome


def optimiser_step(request: StepRequest) -> StepOutcome:
    module = request.engine.module
    if isinstance(module, StepScheduledTask):
        module.begin_step(request.step)
    return planned_step(request) if plans_steps(request.engine) else plain_step(request)
