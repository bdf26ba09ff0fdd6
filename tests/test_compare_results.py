"""launch/compare_results.py: result files side by side, several files per column, renamed protocols."""

from __future__ import annotations

import json
from pathlib import Path


from snps3_ds.reports import compare as compare_results


def test_compare_results_merges_files_and_aligns_zero_shot_keys(tmp_path: Path) -> None:
    (tmp_path / "zs_ret.json").write_text(json.dumps({"metrics": {"d/t2v/R@1@4clips": 14.5, "d/num_texts": 400}}))
    (tmp_path / "zs_qa.json").write_text(json.dumps({"metrics": {"d/qa/zs_acc@4clips": 23.8}, "records": []}))
    (tmp_path / "final.json").write_text(json.dumps({"val/d/t2v/R@1@4clips": 21.0, "val/d/qa/acc@4clips": 39.3}))
    table = compare_results.main([f"zero-shot={tmp_path / 'zs_ret.json'},{tmp_path / 'zs_qa.json'}",
                                  f"fine-tuned={tmp_path / 'final.json'}", "--same", "zs_=", "--keys", "R@1", "acc"])
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "zero-shot", "fine-tuned"]
    assert lines[1].split() == ["d/qa/acc@4clips", "23.80", "39.30"]
    assert lines[2].split() == ["d/t2v/R@1@4clips", "14.50", "21.00"] and len(lines) == 3
