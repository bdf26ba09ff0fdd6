"""Tests for the synthetic demo corpus and the shard writer (DESIGN §3.1).

Every test name contains `demo_corpus`, so `pytest -k demo_corpus` runs them all.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds

from snps3_ds.demo.cli import main
from snps3_ds.demo.corpus import (COLORS, MOTION_PHRASES, SHAPES, SIZES, ClipConfig, ShapeSpec, ShardLayout,
                                  make_demo_corpus, render_clip)

REPO = Path(__file__).resolve().parents[1]
from snps3_ds.sharding.writer import ShardWriter

JSON_FIELDS = {"captions", "source", "kind", "duration", "fps", "width", "height",
               "num_frames", "codec", "attributes"}


def _build(out: Path, **kw) -> dict:
    args = {"train": 12, "test": 6, "seed": 0, "workers": 1, "shards": ShardLayout(5)} | kw
    return make_demo_corpus(out, **args)


def _samples(folder: Path, split: str) -> list[dict]:
    """All samples of a split, read in order through webdataset."""
    manifest = json.loads((folder / f"{split}.shards.json").read_text())
    urls = [str(folder / s["path"]) for s in manifest["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    _build(out)
    return out


# --- the corpus -------------------------------------------------------------------
def test_demo_corpus_files_and_manifest(corpus: Path) -> None:
    for split, n, n_shards in (("train", 12, 3), ("test", 6, 2)):
        manifest = json.loads((corpus / f"{split}.shards.json").read_text())
        assert set(manifest) == {"name", "num_samples", "shards", "codecs",
                                 "total_duration_s", "failures", "command"}
        assert manifest["name"] == split and manifest["num_samples"] == n
        assert manifest["codecs"] == {"h264": n} and manifest["failures"] == []
        assert manifest["total_duration_s"] == pytest.approx(n * 16 / 8)
        assert [s["path"] for s in manifest["shards"]] == [
            f"{split}-{i:06d}.tar" for i in range(n_shards)]
        assert sum(s["num_samples"] for s in manifest["shards"]) == n
        for shard in manifest["shards"]:
            assert (corpus / shard["path"]).stat().st_size == shard["bytes"]
            assert (corpus / shard["idx"]).is_file()
    assert not list(corpus.glob("*.tmp"))


def test_demo_corpus_members_and_json_fields(corpus: Path) -> None:
    samples = _samples(corpus, "train")
    assert [s["__key__"] for s in samples] == [f"train_{i:06d}" for i in range(12)]
    for sample in samples:
        assert {"mp4", "json"} <= set(sample)
        meta = json.loads(sample["json"])
        assert JSON_FIELDS <= set(meta)
        assert meta["source"] == "demo" and meta["kind"] == "video" and meta["codec"] == "h264"
        assert meta["num_frames"] == 16 and meta["fps"] == 8 and meta["duration"] == 2.0
        assert len(meta["captions"]) == 2 and len(set(meta["captions"])) == 2
        assert 64 <= meta["width"] <= 96 and 64 <= meta["height"] <= 96
        shapes = meta["attributes"]["shapes"]
        assert 1 <= len(shapes) <= 2 and len({s["color"] for s in shapes}) == len(shapes)
        assert all(s["color"] != meta["attributes"]["background"] for s in shapes)


def test_demo_corpus_mp4_decodes_to_16_frames(corpus: Path) -> None:
    for sample in _samples(corpus, "test"):
        meta = json.loads(sample["json"])
        with av.open(io.BytesIO(sample["mp4"])) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 16
        assert frames[0].shape == (meta["height"], meta["width"], 3)


def test_demo_corpus_captions_name_the_attributes(corpus: Path) -> None:
    for sample in _samples(corpus, "train") + _samples(corpus, "test"):
        meta = json.loads(sample["json"])
        shapes = meta["attributes"]["shapes"]
        for caption in meta["captions"]:
            for shape in shapes:
                assert shape["color"] in caption and shape["shape"] in caption, caption
                assert any(p in caption for p in MOTION_PHRASES[shape["motion"]]), caption
            if len(shapes) == 1:  # size may be left out, but never contradicted
                assert not any(s in caption for s in SIZES if s != shapes[0]["size"]), caption


def test_demo_corpus_motion_matches_its_name() -> None:
    """The centroid of a rendered shape moves the way its motion label says."""
    rng = np.random.default_rng(0)
    for motion, axis, sign in (("left", 1, -1), ("right", 1, 1), ("up", 0, -1), ("down", 0, 1)):
        spec = ShapeSpec("red", "circle", "small", motion)
        video = render_clip(rng, "black", [spec], 80, 64, 16)
        first, last = (np.argwhere(video[f].any(axis=-1)).mean(axis=0) for f in (0, -1))
        assert sign * (last[axis] - first[axis]) > 20, motion
    still = render_clip(rng, "grey", [ShapeSpec("red", "square", "large", "still")], 64, 64, 16)
    assert np.array_equal(still[0], still[-1])
    assert set(SHAPES) >= {"circle", "square", "triangle"} and len(COLORS) >= 6


def test_demo_corpus_same_seed_same_output_any_workers(corpus: Path, tmp_path: Path) -> None:
    _build(tmp_path / "again", workers=2)
    for split in ("train", "test"):
        for shard in json.loads((corpus / f"{split}.shards.json").read_text())["shards"]:
            a = (corpus / shard["path"]).read_bytes()
            assert a == (tmp_path / "again" / shard["path"]).read_bytes(), shard["path"]


def test_demo_corpus_other_seed_other_clips(corpus: Path, tmp_path: Path) -> None:
    _build(tmp_path / "seed1", train=12, test=0, seed=1)
    assert not (tmp_path / "seed1" / "test.shards.json").exists()
    metas = [[json.loads(s["json"]) for s in _samples(folder, "train")]
             for folder in (corpus, tmp_path / "seed1")]
    assert [m["captions"] for m in metas[0]] != [m["captions"] for m in metas[1]]
    assert [m["attributes"] for m in metas[0]] != [m["attributes"] for m in metas[1]]


def test_demo_corpus_train_and_test_are_different_clips(corpus: Path) -> None:
    train, test = _samples(corpus, "train"), _samples(corpus, "test")
    assert not {s["__key__"] for s in train} & {s["__key__"] for s in test}
    train_clips = {s["mp4"] for s in train}
    assert not any(s["mp4"] in train_clips for s in test)


def test_demo_corpus_val_split_added_later_leaves_train_and_test_as_they_were(corpus: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    """ensure_demo_corpus builds only the missing split: the val split comes from its own RNG streams, so
    train and test stay byte for byte the corpus they were, and val holds clips of neither."""
    from snps3_ds.config import DataConfig
    from snps3_ds.demo import ensure

    folder = tmp_path / "demo"
    _build(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    monkeypatch.setitem(ensure.DEMO_SPLIT_SIZES, "val", 4)
    data = DataConfig(train_shards=[str(folder / "train")], eval_shards=[str(folder / "test"), str(folder / "val")],
                      make_demo_if_missing=True)
    ensure.ensure_demo_corpus(data)
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert {name: after[name] for name in before} == before
    val = _samples(folder, "val")
    assert [s["__key__"] for s in val] == [f"val_{i:06d}" for i in range(4)]
    others = {s["mp4"] for split in ("train", "test") for s in _samples(folder, split)}
    assert not any(s["mp4"] in others for s in val)
    with pytest.raises(ValueError, match="no demo split is called valid"):
        ensure.ensure_demo_corpus(DataConfig(train_shards=[str(folder / "train")],
                                             eval_shards=[str(folder / "valid")], make_demo_if_missing=True))


def test_demo_corpus_vp9_writes_webm(tmp_path: Path) -> None:
    _build(tmp_path, train=3, test=0, clips=ClipConfig(codec="vp9"))
    manifest = json.loads((tmp_path / "train.shards.json").read_text())
    assert manifest["codecs"] == {"vp9": 3}
    for sample in _samples(tmp_path, "train"):
        assert "webm" in sample and "mp4" not in sample
        assert json.loads(sample["json"])["codec"] == "vp9"
        with av.open(io.BytesIO(sample["webm"])) as container:
            assert container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
            assert len(list(container.decode(video=0))) == 16


def test_demo_corpus_dali_index_points_at_members(corpus: Path) -> None:
    manifest = json.loads((corpus / "train.shards.json").read_text())
    for shard in manifest["shards"]:
        lines = (corpus / shard["idx"]).read_text().splitlines()
        assert lines[0] == f"v1.2 {shard['num_samples']}"
        assert len(lines) == 1 + shard["num_samples"]
        tar = (corpus / shard["path"]).read_bytes()
        for line in lines[1:]:
            fields = line.split()  # repeated: ext offset size name
            exts = {fields[i]: (int(fields[i + 1]), int(fields[i + 2]))
                    for i in range(0, len(fields), 4)}
            assert set(exts) == {"json", "mp4"}
            offset, size = exts["json"]
            assert json.loads(tar[offset:offset + size])["source"] == "demo"


def test_demo_corpus_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="all 0"):
        make_demo_corpus(tmp_path, train=0, test=0)
    with pytest.raises(ValueError, match="--codec"):
        make_demo_corpus(tmp_path, train=2, test=0, clips=ClipConfig(codec="av1"))
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--train", "0", "--test", "0", "--val", "0"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--codec", "av1"])
    assert not list(tmp_path.glob("*.tar"))


# --- the shard writer -----------------------------------------------------------------
def _sample(i: int) -> dict[str, bytes]:
    return {"txt": f"caption {i}".encode(), "json": json.dumps({"i": i}).encode()}


def test_demo_corpus_shard_writer_rolls_over_and_is_readable(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "set", max_samples=3, command="build it") as writer:
        for i in range(7):
            writer.write(f"s{i:03d}", _sample(i), codec="h264", duration=1.5)
    manifest = json.loads((tmp_path / "set.shards.json").read_text())
    assert [s["num_samples"] for s in manifest["shards"]] == [3, 3, 1]
    assert manifest["num_samples"] == 7 and manifest["command"] == "build it"
    assert manifest["codecs"] == {"h264": 7} and manifest["total_duration_s"] == 10.5
    samples = list(wds.WebDataset(str(tmp_path / "set-{000000..000002}.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"s{i:03d}" for i in range(7)]
    assert samples[4]["txt"] == b"caption 4"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"set-{i:06d}.{ext}" for i in range(3) for ext in ("tar", "idx")] + ["set.shards.json"])


def test_demo_corpus_shard_writer_rolls_over_at_max_bytes(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "big", max_bytes=6000) as writer:
        for i in range(4):
            writer.write(f"k{i}", {"bin": bytes(2000)})
    manifest = writer.manifest()
    assert [s["num_samples"] for s in manifest["shards"]] == [2, 2]
    assert manifest["command"] == " ".join(sys.argv)


def test_demo_corpus_shard_writer_is_atomic(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "a", max_samples=2) as writer:
        for i in range(3):
            writer.write(f"k{i}", _sample(i))
        # Shard 1 is still open: only its temp file exists, under a non-final name.
        assert (tmp_path / "a-000000.tar").is_file() and (tmp_path / "a-000000.idx").is_file()
        assert not (tmp_path / "a-000001.tar").exists()
        assert (tmp_path / "a-000001.tar.tmp").exists()
        assert not (tmp_path / "a.shards.json").exists()
    assert (tmp_path / "a-000001.tar").is_file()
    assert not list(tmp_path.glob("*.tmp"))


def test_demo_corpus_shard_writer_records_failures(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "f") as writer:
        writer.write("good", _sample(0))
        writer.add_failure("bad", "undecodable")
    manifest = json.loads((tmp_path / "f.shards.json").read_text())
    assert manifest["failures"] == [{"key": "bad", "reason": "undecodable"}]
    assert manifest["num_samples"] == 1


def test_demo_corpus_shard_writer_keeps_finished_shards_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(tmp_path / "e", max_samples=2) as writer:
            for i in range(5):
                writer.write(f"k{i}", _sample(i), codec="vp9")
            raise RuntimeError("boom")
    manifest = json.loads((tmp_path / "e.shards.json").read_text())
    assert [s["path"] for s in manifest["shards"]] == ["e-000000.tar", "e-000001.tar"]
    assert manifest["num_samples"] == 4 and manifest["codecs"] == {"vp9": 4}
    assert not (tmp_path / "e-000002.tar").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_demo_corpus_shard_writer_rejects_bad_keys(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "k") as writer:
        writer.write("one", _sample(1))
        with pytest.raises(ValueError, match="'one'"):
            writer.write("one", _sample(2))
        with pytest.raises(ValueError, match="'a.b'"):
            writer.write("a.b", _sample(3))
        with pytest.raises(TypeError, match="'txt'"):
            writer.write("two", {"txt": "not bytes"})  # type: ignore[dict-item]
    assert writer.manifest()["num_samples"] == 1
