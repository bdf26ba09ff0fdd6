"""The check's report: one Item per thing it measures, written as runs/gpu_check/report.json and report.md.

Every item the check knows is listed, run or not, so a reader sees at once what was measured on this machine
and, for what was not, why ("not run: no CUDA device", "not run: the time budget was spent", ...).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OK, FAILED, NOT_RUN = "ok", "failed", "not run"


@dataclass
class Item:
    """One measurement: what it is, whether it ran, and its figures."""

    id: str
    title: str
    gpu: bool  # needs a CUDA device
    status: str = NOT_RUN
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def not_run(self, reason: str) -> "Item":
        self.status, self.reason = NOT_RUN, reason
        return self


@dataclass
class Report:
    machine: dict[str, Any]
    items: list[Item]
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "seconds": round(time.time() - self.started, 1),
                "summary": {s: sum(i.status == s for i in self.items) for s in (OK, FAILED, NOT_RUN)},
                "items": [asdict(item) for item in self.items]}

    def write(self, out: Path) -> None:
        """report.json and report.md in `out` (rewritten after every item, so a run cut short still reports)."""
        out.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        (out / "report.json").write_text(json.dumps(data, indent=1, default=str))
        (out / "report.md").write_text(markdown(data))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)[:200]
    return str(value)


def markdown(data: dict[str, Any]) -> str:
    """The report as Markdown: the machine, one summary table, then each item's figures."""
    machine = data["machine"]
    lines = ["# GPU check", "", f"{machine.get('device', '?')}; {machine.get('cpu', '?')}, {machine.get('cores', '?')} "
             f"cores; Python {machine.get('python', '?')}, torch {machine.get('torch', '?')}; "
             f"{data['seconds']:.0f} s; {data['summary']}", "", "| item | status | seconds | note |", "|---|---|---|---|"]
    for item in data["items"]:
        note = item["reason"] or ", ".join(f"{k} {_cell(v)}" for k, v in list(item["figures"].items())[:4]
                                           if not isinstance(v, (list, dict)))
        lines.append(f"| {item['id']}: {item['title']} | {item['status']} | {item['seconds']:.0f} | {note} |")
    for item in data["items"]:
        if not item["figures"]:
            continue
        lines += ["", f"## {item['id']}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in item["figures"].items()]
    return "\n".join(lines) + "\n"
