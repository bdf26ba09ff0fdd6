"""launch/plot.py: metrics.jsonl with mixed keys, a resumed run and bad lines -> a valid PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


from snps3_ds.reports import curves as plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))


def _train(step: int, loss: float) -> dict:
    return {"step": step, "time": 1000.0 + step, "train/loss": loss, "train/mlm": loss / 2, "train/mlm_acc": 10.0,
            "train/l1_t2v_R@1": 5.0, "train/lr_default": 1e-4, "train/grad_norm": 1.5,
            "perf/samples_per_s": 30.0, "perf/data_wait_frac": 0.1, "data/skipped_undecodable": 0,
            "system/cpu_rss_gb": 2.0}


def test_plot_writes_a_png_with_resumed_steps_and_a_bad_line(tmp_path: Path, capsys) -> None:
    first = [_train(s, 1.0) for s in range(1, 6)] + [{"step": 5, "val/demo_test/t2v/R@1": 20.0}]
    resumed = [_train(s, 2.0) for s in (3, 4)]  # resumed from the step-2 checkpoint, not yet at step 5
    _write(tmp_path / "metrics.jsonl", first + resumed, extra_lines=('{"step": 5, "train/lo',))
    out = plot.main([str(tmp_path)])
    printed = capsys.readouterr()
    assert out == tmp_path / "curves.png" and str(out) in printed.out
    assert "skipped 1 bad line(s); first: line 9" in printed.err
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000

    series = plot.read_metrics(tmp_path / "metrics.jsonl")
    assert series["train/loss"] == {1: 1.0, 2: 1.0, 3: 2.0, 4: 2.0}  # the resumed run wins; old step 5 dropped
    assert "val/demo_test/t2v/R@1" not in series  # logged at step 5 by the abandoned run


def test_rows_of_one_step_merge_and_a_repeated_step_keeps_the_later_value() -> None:
    rows = [(1, {"train/loss": 3.0}), (1, {"val/x/t2v/R@1": 5.0}), (2, {"train/loss": 2.0}),
            (2, {"train/loss": 1.5, "time": 9.0, "note": "text", "flag": True})]
    assert plot.merge_rows(rows) == {"train/loss": {1: 3.0, 2: 1.5}, "val/x/t2v/R@1": {1: 5.0}}


def test_plot_groups_keys_and_filters(tmp_path: Path) -> None:
    groups = {k: plot.group_of(k) for k in _train(1, 1.0) if k not in ("step", "time")}
    assert groups == {"train/loss": "train losses", "train/mlm": "train losses", "train/mlm_acc": "train metrics",
                      "train/l1_t2v_R@1": "train metrics", "train/lr_default": "learning rates",
                      "train/grad_norm": "train optimiser", "perf/samples_per_s": "perf",
                      "perf/data_wait_frac": "perf fractions", "data/skipped_undecodable": "data",
                      "system/cpu_rss_gb": "system"}
    _write(tmp_path / "metrics.jsonl", [_train(s, 1.0 / s) for s in range(1, 30)])
    out = plot.main([str(tmp_path), "--out", str(tmp_path / "sub" / "loss.png"), "--keys", "train/*loss"])
    assert out.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(SystemExit, match="no key matches"):
        plot.main([str(tmp_path), "--keys", "nothing/*"])


def test_plot_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="metrics.jsonl: no such file"):
        plot.main([str(tmp_path)])
    (tmp_path / "metrics.jsonl").write_text('{"time": 1.0, "train/loss": 1.0}\nnot json\n')
    with pytest.raises(SystemExit, match=r"metrics.jsonl: no readable rows; first bad line 1: 'step' must be"):
        plot.main([str(tmp_path)])
