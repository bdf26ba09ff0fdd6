"""Fault injection on the data path: corrupt shards and samples are skipped, counted by reason and logged;
a run stops with a clear error only when the skip rate passes data.max_skip_rate; the shard builder reports
bad inputs and never stops half-way. Select with `pytest -k fault`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shard_factory import data_config, jpeg_bytes, raw_samples, truncate, write_set
from snps3_ds.config import MaskingConfig
from snps3_ds.data.errors import DataQualityError
from snps3_ds.data.loader import build_eval_loader, StreamPlacement, build_train_loader


from snps3_ds.sharding import build as build_shards
from snps3_ds.sharding import verify as verify_shards


@pytest.fixture(scope="module")
def faulty_set(vp9: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good samples around one sample per corruption the loader must survive."""
    good = raw_samples(vp9 / "test")
    video, meta = good[0]["webm"], good[0]["json"]
    no_caption_meta = json.dumps({**json.loads(meta), "captions": []}).encode()
    samples = [
        ("good_0", {"webm": video, "json": meta}),
        ("garbage_media", {"webm": b"\x1a\x45\xdf\xa3 not a video" * 40, "json": meta}),
        ("no_json", {"webm": video}),
        ("not_utf8_json", {"webm": video, "json": b"\xff\xfe{\"captions\": [\"x\"]}"}),
        ("not_utf8_caption", {"webm": video, "json": no_caption_meta, "txt": "caf\xe9 au lait".encode("latin-1")}),
        ("empty_caption", {"webm": video, "json": no_caption_meta}),
        ("no_media", {"json": meta}),
        ("good_1", {"webm": good[1]["webm"], "json": good[1]["json"]}),
    ]
    return write_set(tmp_path_factory.mktemp("faulty") / "faulty", samples)


EXPECTED = {"undecodable": 1, "missing_json": 1, "bad_json": 1, "non_utf8_caption": 1, "no_caption": 1,
            "missing_media": 1}


@pytest.mark.parametrize("decoder", ["auto", "dali"])
def test_fault_corrupt_samples_skipped_counted_and_logged(faulty_set: Path, tokenizer, decoder: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    data = data_config(eval_shards=[str(faulty_set)], decoder=decoder, max_skip_rate=1.0)
    loader = build_eval_loader(data, tokenizer, 4, 2)
    batches = list(loader)
    assert [k for b in batches for k in b.keys] == ["good_0", "good_1"]
    carried: dict[str, int] = {}
    for batch in batches:
        for reason, n in batch.skipped.items():
            carried[reason] = carried.get(reason, 0) + n
    assert carried == EXPECTED
    stats = loader.stats()
    assert stats["data/skipped"] == 6 and stats["data/skip_rate"] == pytest.approx(6 / 8)
    assert all(stats[f"data/skipped_{reason}"] == 1 for reason in EXPECTED)
    for key in ("garbage_media", "no_json", "not_utf8_caption", "no_media"):
        assert key in caplog.text


@pytest.mark.parametrize("decoder", ["auto", "dali"])
def test_fault_truncated_tar_keeps_what_is_readable(vp9: Path, tmp_path: Path, tokenizer, decoder: str) -> None:
    whole = raw_samples(vp9 / "test-000000.tar")
    shard = shutil.copy(vp9 / "test-000000.tar", tmp_path / "cut-000000.tar")
    shutil.copy(vp9 / "test-000000.idx", tmp_path / "cut-000000.idx")
    truncate(Path(shard), Path(shard).stat().st_size // 2)
    data = data_config(eval_shards=[str(shard), str(vp9 / "test-000001.tar")], decoder=decoder, max_skip_rate=1.0)
    loader = build_eval_loader(data, tokenizer, 4, 2)
    keys = [k for b in loader for k in b.keys]
    later = [s["__key__"] for s in raw_samples(vp9 / "test-000001.tar")]
    assert keys[-len(later):] == later, "the shard after the truncated one is read in full"
    assert set(keys[:-len(later)]) < {s["__key__"] for s in whole}, "only part of the truncated shard is read"
    assert loader.stats()["data/skipped_truncated_shard"] == 1


def test_fault_skip_rate_over_threshold_stops_training(vp9: Path, tmp_path: Path, tokenizer) -> None:
    good = raw_samples(vp9 / "train-000000.tar")
    samples = [(f"bad_{i}", {"webm": b"junk" * 64, "json": good[0]["json"]}) for i in range(3)]
    samples += [(s["__key__"], {"webm": s["webm"], "json": s["json"]}) for s in good]
    prefix = write_set(tmp_path / "mostly_bad", samples)
    data = data_config(train_shards=[str(prefix)], max_skip_rate=0.2, skip_rate_warmup=6)
    batches = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 0))
    with pytest.raises(DataQualityError, match=r"max_skip_rate=20\.0%.*undecodable"):
        for _ in range(50):
            next(batches)
    lenient = build_train_loader(data_config(train_shards=[str(prefix)], max_skip_rate=0.9), MaskingConfig(),
                                 tokenizer, 2, StreamPlacement(0, 1, 0))
    for _ in range(6):
        next(lenient)
    assert 0 < lenient.stats()["data/skip_rate"] < 0.9


def test_fault_counts_travel_from_worker_processes(faulty_set: Path, tokenizer) -> None:
    data = data_config(train_shards=[str(faulty_set)], num_workers=2, max_skip_rate=1.0)
    batches = build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 0))
    for _ in range(6):
        next(batches)
    stats = batches.stats()
    reasons = {k.removeprefix("data/skipped_") for k in stats if k.startswith("data/skipped_")}
    assert stats["data/skipped"] >= 6 and set(EXPECTED) <= reasons


def test_fault_substitutes_keep_batches_whole_and_the_order_world_independent(faulty_set: Path, tokenizer) -> None:
    """A bad sample is replaced by a substitute drawn from its position, so batches keep their size and the
    sequence of global batches is the same on one rank as on two ranks with two workers each."""
    def keys(world: int, workers: int, rounds: int) -> list[list[str]]:
        data = data_config(train_shards=[str(faulty_set)], num_workers=workers, max_skip_rate=1.0)
        streams = [build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(r, world, 0))
                   for r in range(world)]
        return [next(streams[r]).keys for _ in range(rounds) for r in range(world)]

    alone = keys(1, 0, 6)
    assert all(len(batch) == 2 and set(batch) <= {"good_0", "good_1"} for batch in alone)
    assert keys(2, 2, 3) == alone


def test_fault_unreadable_training_set_fails_instead_of_spinning(vp9: Path, tmp_path: Path, tokenizer) -> None:
    shard = Path(shutil.copy(vp9 / "train-000000.tar", tmp_path / "dead-000000.tar"))
    truncate(shard, 300)  # not even one whole tar header
    data = data_config(train_shards=[str(shard)], max_skip_rate=1.0)
    with pytest.raises(DataQualityError, match="gave no sample"):
        next(build_train_loader(data, MaskingConfig(), tokenizer, 2, StreamPlacement(0, 1, 0)))


def _media_dir(vp9: Path, folder: Path) -> Path:
    folder.mkdir()
    sample = raw_samples(vp9 / "train-000000.tar")[0]
    (folder / "good.webm").write_bytes(sample["webm"])
    (folder / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 500)
    (folder / "photo.jpg").write_bytes(jpeg_bytes())
    return folder


def test_fault_build_shards_reports_bad_inputs_and_finishes(vp9: Path, tmp_path: Path) -> None:
    media = _media_dir(vp9, tmp_path / "media")
    rows = [{"path": "good.webm", "caption": "a clip"}, {"path": "missing.mp4", "caption": "gone"},
            {"path": "garbage.mp4", "caption": "junk"}, {"path": "good.webm", "caption": "  "},
            {"path": "good.webm", "caption": "too late", "start": 50, "end": 60, "key": "late"},
            {"path": "photo.jpg", "caption": "a photo"}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    out = tmp_path / "out" / "set"
    summary = build_shards.main(["--manifest", str(manifest), "--format", "jsonl", "--media-root", str(media),
                                 "--out", str(out), "--codec", "vp9", "--workers", "1", "--shard-size", "1"])
    assert summary["samples"] == 2 and summary["shards"] == 2
    assert summary["failures"] == {"missing_file": 1, "undecodable": 1, "empty_caption": 1, "zero_frames": 1,
                                   "bad_manifest_line": 1}
    failures = json.loads((tmp_path / "out" / "set.shards.json").read_text())["failures"]
    assert {f["key"] for f in failures} == {"missing", "garbage", "good_2", "late", "line_7"}
    assert verify_shards.main([str(out), "--workers", "1"])["ok"] == 2


def test_fault_build_shards_resumes_after_an_interruption(vp9: Path, tmp_path: Path) -> None:
    media = _media_dir(vp9, tmp_path / "media")
    manifest = tmp_path / "m.jsonl"
    rows = [{"path": "good.webm", "caption": f"clip {i}", "key": f"k{i}"} for i in range(3)]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out" / "set"
    args = ["--manifest", str(manifest), "--format", "jsonl", "--media-root", str(media), "--out", str(out),
            "--workers", "1", "--shard-size", "1"]
    assert build_shards.main(args)["samples"] == 3
    first = (tmp_path / "out" / "set-000000.tar").stat().st_mtime_ns
    (tmp_path / "out" / "set-000002.tar").unlink()  # as if the build had died before its last shard
    rows += [{"path": "good.webm", "caption": "clip 3", "key": "k3"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = build_shards.main(args)
    assert summary["samples"] == 4 and summary["kept_from_earlier_build"] == 2
    assert (tmp_path / "out" / "set-000000.tar").stat().st_mtime_ns == first
    assert sorted(s["__key__"] for s in raw_samples(out)) == ["k0", "k1", "k2", "k3"]
    with pytest.raises(SystemExit, match="other settings"):
        build_shards.main(args + ["--codec", "vp9"])
