"""Shard readers for every --format layout (snps3_ds.datasets.registry), and build_shards / verify_shards end
to end on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shard_factory import jpeg_bytes, raw_samples, vp9_corpus
from snps3_ds.datasets.base import ManifestError, ReaderOptions
from snps3_ds.datasets.registry import read_manifest
from snps3_ds.sharding import build as build_shards
from snps3_ds.sharding import verify as verify_shards


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _layouts(root: Path) -> dict[str, tuple[Path, ReaderOptions, list[tuple[str, str, list[str]]]]]:
    """format -> (annotation file, options, expected [(key, media path relative to root, captions)])."""
    url_map = _write(root / "urls.tsv", "http://x/a.jpg\timgs/a.jpg\n")
    coco = {"images": [{"id": 7, "file_name": "val/7.jpg"}],
            "annotations": [{"image_id": 7, "caption": "a cat"}, {"image_id": 7, "caption": "a cat "},
                            {"image_id": 7, "caption": "a sitting cat"}]}
    vg = [{"id": 12, "regions": [{"phrase": "red car", "image_id": 12}, {"phrase": "red car", "image_id": 12},
                                 {"phrase": "tree", "image_id": 12}]}]
    msrvtt = {"videos": [{"video_id": "video1", "split": "train"}, {"video_id": "video2", "split": "test"}],
              "sentences": [{"video_id": "video1", "caption": "a man sings"}, {"video_id": "video2", "caption": "x"},
                            {"video_id": "video1", "caption": "someone sings"}]}
    didemo = [{"video": "a@b_1.mov", "description": "a dog runs", "times": [[0, 1]]},
              {"video": "a@b_1.mov", "description": "it stops", "times": [[2, 2]]}]
    return {
        "jsonl": (_write(root / "m.jsonl", '{"file": "v/a.mp4", "captions": ["one", "two"], "start": 1, "end": 2}\n'),
                  ReaderOptions(), [("a", "v/a.mp4", ["one", "two"])]),
        "csv": (_write(root / "m.csv", "path;caption\nv/b.webm;a caption\n"), ReaderOptions(),
                [("b", "v/b.webm", ["a caption"])]),
        "webvid": (_write(root / "webvid.csv", "videoid,contentUrl,duration,page_dir,name\n"
                                               "1066,http://x,PT00H00M11S,001_050,Sunset over a lake\n"),
                   ReaderOptions(), [("1066", "001_050/1066.mp4", ["Sunset over a lake"])]),
        "cc3m": (_write(root / "cc3m.tsv", "A dog on grass\thttp://x/a.jpg\nNo file\thttp://x/b.jpg\n"),
                 ReaderOptions(url_map=url_map), [("cc3m_000000001", "imgs/a.jpg", ["A dog on grass"])]),
        "coco": (_write(root / "coco.json", json.dumps(coco)), ReaderOptions(),
                 [("coco_7", "val/7.jpg", ["a cat", "a sitting cat"])]),
        "vg": (_write(root / "vg.json", json.dumps(vg)), ReaderOptions(), [("vg_12", "12.jpg", ["red car", "tree"])]),
        "msrvtt": (_write(root / "MSRVTT_data.json", json.dumps(msrvtt)), ReaderOptions(split="train"),
                   [("video1", "video1.mp4", ["a man sings", "someone sings"])]),
        "msrvtt_jsfusion": (_write(root / "js.csv", "key;vid_key;video_id;sentence\r\nret0;msr7;video7;a; b\r\n"),
                            ReaderOptions(), [("video7", "video7.mp4", ["a; b"])]),
        "msvd": (_write(root / "msvd.txt", "# comment\n-4wsu_5_15 a squirrel eats\n-4wsu_5_15 it eats a nut\n"),
                 ReaderOptions(), [("-4wsu_5_15", "-4wsu_5_15.avi", ["a squirrel eats", "it eats a nut"])]),
        "didemo": (_write(root / "val_data.json", json.dumps(didemo)), ReaderOptions(),
                   [("a_b_1", "a@b_1.mov", ["a dog runs it stops"])]),
    }


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "webvid", "cc3m", "coco", "vg", "msrvtt", "msrvtt_jsfusion", "msvd",
                                 "didemo"])
def test_readers_read_each_layout(tmp_path: Path, fmt: str) -> None:
    manifest, options, expected = _layouts(tmp_path)[fmt]
    items = [i for i in read_manifest(fmt, manifest, tmp_path, options) if not i.error]
    assert [(i.key, i.path, i.captions) for i in items] == [(k, tmp_path / p, c) for k, p, c in expected]
    assert all(i.kind == ("image" if fmt in ("cc3m", "coco", "vg") else "video") for i in items)


def test_readers_name_the_file_and_the_expected_form(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"webvid\.csv: WebVid CSV lacks column.*page_dir"):
        list(read_manifest("webvid", _write(tmp_path / "webvid.csv", "videoid,name\n1,x\n"), tmp_path))
    with pytest.raises(ManifestError, match="--url-map"):
        list(read_manifest("cc3m", _write(tmp_path / "c.tsv", "cap\turl\n"), tmp_path))
    with pytest.raises(ManifestError, match="not known"):
        list(read_manifest("laion", tmp_path / "x", tmp_path))
    items = list(read_manifest("cc3m", _write(tmp_path / "c.tsv", "cap\thttp://nowhere\n"), tmp_path,
                               ReaderOptions(url_map=_write(tmp_path / "u.json", "{}"))))
    assert items[0].error and "url not in --url-map" in items[0].error


def test_build_shards_images_and_vp9_video(tmp_path: Path) -> None:
    corpus = vp9_corpus(tmp_path / "corpus")
    media = tmp_path / "media"
    (media / "val").mkdir(parents=True)
    for i in range(2):
        (media / "val" / f"{i}.jpg").write_bytes(jpeg_bytes(80, 60, seed=i))
    (media / "clip.webm").write_bytes(raw_samples(corpus / "test")[0]["webm"])
    coco = {"images": [{"id": i, "file_name": f"val/{i}.jpg"} for i in range(2)],
            "annotations": [{"image_id": i, "caption": f"picture {i}"} for i in range(2)]}
    images = build_shards.main(["--manifest", str(_write(tmp_path / "coco.json", json.dumps(coco))), "--format", "coco",
                                "--media-root", str(media), "--out", str(tmp_path / "out" / "coco"), "--resize", "30",
                                "--codec", "vp9", "--workers", "1"])
    assert images["samples"] == 2 and images["codecs"] == {"jpeg": 2}
    sample = raw_samples(tmp_path / "out" / "coco")[0]
    meta = json.loads(sample["json"])
    assert "jpg" in sample and meta["kind"] == "image" and (meta["width"], meta["height"]) == (40, 30)
    manifest = _write(tmp_path / "v.jsonl", json.dumps({"path": "clip.webm", "caption": "moving", "start": 0.5}))
    video = build_shards.main(["--manifest", str(manifest), "--format", "jsonl", "--media-root", str(media), "--out",
                               str(tmp_path / "out" / "vid"), "--codec", "vp9", "--fps", "4", "--gop", "4",
                               "--workers", "2"])
    assert video["codecs"] == {"vp9": 1}
    meta = json.loads(raw_samples(tmp_path / "out" / "vid")[0]["json"])
    assert meta["codec"] == "vp9" and meta["fps"] == 4 and meta["num_frames"] == 6 and "start" not in meta
    for prefix in ("coco", "vid"):
        assert (tmp_path / "out" / f"{prefix}-000000.idx").is_file()
        assert verify_shards.main([str(tmp_path / "out" / prefix), "--workers", "1"])["failures"] == []


def test_build_shards_refuses_copy_with_resize(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.jsonl", '{"path": "a.mp4", "caption": "x"}\n')
    with pytest.raises(SystemExit, match="--codec h264 or vp9"):
        build_shards.main(["--manifest", str(manifest), "--format", "jsonl", "--out", str(tmp_path / "o"),
                           "--codec", "copy", "--resize", "64"])


def test_readers_bad_entries_of_grouped_files_become_failed_samples(tmp_path: Path) -> None:
    msrvtt = {"videos": [{"video_id": "video1"}, {"split": "test"}],
              "sentences": [{"video_id": "video1", "caption": "a man sings"}, {"video_id": "video1"}]}
    items = list(read_manifest("msrvtt", _write(tmp_path / "MSRVTT_data.json", json.dumps(msrvtt)), tmp_path))
    assert [(i.key, i.captions) for i in items if not i.error] == [("video1", ["a man sings"])]
    assert [i.key for i in items if i.error] == ["sentences_1_", "videos_1_"]
    assert "sentences[1]: key 'caption'" in items[1].error and "MSRVTT_data.json" in items[1].error
    didemo = [{"video": "a.mov", "description": "a dog runs"}, {"video": "a.mov", "times": [[0, 0]]}]
    items = list(read_manifest("didemo", _write(tmp_path / "val_data.json", json.dumps(didemo)), tmp_path))
    assert [(i.key, i.captions, i.error is None) for i in items] == [("a", ["a dog runs"], True),
                                                                    ("item_1", [], False)]
    assert "item 1: key 'description'" in items[1].error
