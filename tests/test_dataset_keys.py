"""Shard keys and annotation keys agree by construction (snps3_ds.datasets: one key function per dataset).

For every dataset with both sides, small files in the public format and tiny clips are written here, real shards
are built with snps3_ds.sharding.build, the annotation with build_annotations, and every annotation item's
`video` must be a sample `__key__` of those shards. For the shard-only formats the samples must carry exactly the
keys of the module's key function, unique and safe. Select with `pytest -k dataset_keys`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from shard_factory import jpeg_bytes, meta_bytes, raw_samples, write_set
from snps3_ds.datasets import cc3m, coco, didemo, generic, msrvtt, vg, wds, webvid
from snps3_ds.datasets.annotations_cli import main as build_annotation
from snps3_ds.demo.corpus import encode_video
from snps3_ds.downstream.annotations import load_annotation
from snps3_ds.sharding import build as build_shards

SAFE_KEY = re.compile(r"[A-Za-z0-9_\-]+")
MSRVTT_IDS = [f"video{i}" for i in range(4)]
MSVD_NAMES = ["-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208", "00jrXRMlZOY_0_10"]
DIDEMO_NAMES = ["12090392@N02_13482799053_87ef417396.mov", "54322086@N00_5307455926_ed3ee16ad2.avi",
                "12090392_N02_13482799053_87ef417396.mp4"]  # the last has the first's key: one video
OPTIONS = ["a man is singing", "a dog runs", "cars race", "a cat sleeps", "people dance"]


def _write(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clip() -> bytes:
    """A 4-frame 32x32 H.264 mp4 (a few KB), the media of every video sample."""
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    return encode_video(frames, 4.0, "h264")


def _msrvtt_files(root: Path, clip: bytes) -> None:
    data = {"videos": [{"video_id": v, "split": "train" if i < 3 else "test"} for i, v in enumerate(MSRVTT_IDS)],
            "sentences": [{"video_id": v, "caption": f"caption {n} of {v}"} for n in range(2) for v in MSRVTT_IDS]}
    _write(root / "MSRVTT_data.json", data)
    _write(root / "MSRVTT_train.7k.csv", "video_id\nvideo2\nvideo0\n")
    _write(root / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo1\nvideo2\n")
    _write(root / "train_qa.json", [{"answer": a, "id": i, "question": "what?", "video_id": v}
                                    for i, (v, a) in enumerate([(0, "man"), (1, "dog"), (3, "cat")])])
    _write(root / "MSRVTT_MC_test.json", [{"clip_name": "video3", "options": OPTIONS, "answer": 1},
                                          {"clip_name": "video1.mp4", "options": OPTIONS, "answer": "0"}])
    _write(root / "MSR_MC_test.csv", "key\tvid_key\ta1\ta2\ta3\ta4\ta5\tanswer\n"
                                     "mc0\tmsr3\t" + "\t".join(OPTIONS) + "\t2\n")
    for sep, name in ((";", "semicolon"), (",", "comma")):
        rows = [sep.join(["key", "vid_key", "video_id", "sentence"]),
                sep.join(["ret0", "msr3", "video3", f"a cat sleeps{sep} then wakes"]),
                sep.join(["ret1", "msr1", "video1", "a dog runs"])]
        if sep == ",":
            rows[1] = 'ret0,msr3,video3,"a cat sleeps, then wakes"'
        _write(root / name / "MSRVTT_JSFUSION_test.csv", "\r\n".join(rows) + "\r\n")
    (root / "videos").mkdir()
    for video in MSRVTT_IDS:
        (root / "videos" / f"{video}.mp4").write_bytes(clip)


def _msvd_files(root: Path, clip: bytes) -> None:
    lines = ["# MSVD descriptions"] + [f"{name} caption {n} of clip {i}" for i, name in enumerate(MSVD_NAMES)
                                       for n in range(2)]
    _write(root / "AllVideoDescriptions.txt", "\n".join(lines) + "\n")
    _write(root / "test_list.txt", f"{MSVD_NAMES[2]}\n{MSVD_NAMES[0]}\n")
    _write(root / "youtube_mapping.txt", "".join(f"{name} vid{i + 1}\n" for i, name in enumerate(MSVD_NAMES)))
    _write(root / "train_qa.json", [{"answer": "squirrel", "id": 0, "question": "what eats?", "video_id": 1},
                                    {"answer": "tomato", "id": 1, "question": "what is cut?", "video_id": 3}])
    (root / "videos").mkdir()
    for name in MSVD_NAMES:  # the reader looks for <name>.avi and finds the .mp4
        (root / "videos" / f"{name}.mp4").write_bytes(clip)


def _didemo_files(root: Path, clip: bytes) -> None:
    entries = [{"video": name, "description": f"moment {i}", "times": [[i, i]], "annotation_id": i}
               for i, name in enumerate(DIDEMO_NAMES + DIDEMO_NAMES[1:2])]
    _write(root / "test_data.json", entries)
    (root / "videos").mkdir()
    for name in DIDEMO_NAMES[:2]:
        (root / "videos" / name).write_bytes(clip)


@dataclass(frozen=True)
class Joined:
    """One annotation format and the shards it joins: which files build each, under the dataset's folder."""

    shard_format: str
    shard_manifest: str
    annotation: tuple[str, ...]  # build_annotations FORMAT FILE [FILE]
    same_texts: bool = True  # the shard captions are the annotation texts (both read from one file)


JOINED = {
    "msrvtt_7k": Joined("msrvtt", "MSRVTT_data.json", ("msrvtt_train", "MSRVTT_train.7k.csv", "MSRVTT_data.json")),
    "msrvtt_9k": Joined("msrvtt", "MSRVTT_data.json", ("msrvtt_train", "MSRVTT_train.9k.csv", "MSRVTT_data.json")),
    "msrvtt_qa": Joined("msrvtt", "MSRVTT_data.json", ("msrvtt_qa", "train_qa.json"), same_texts=False),
    "msrvtt_mc_json": Joined("msrvtt", "MSRVTT_data.json", ("msrvtt_mc", "MSRVTT_MC_test.json"), same_texts=False),
    "msrvtt_mc_tsv": Joined("msrvtt", "MSRVTT_data.json", ("msrvtt_mc", "MSR_MC_test.csv"), same_texts=False),
    "jsfusion_semicolon": Joined("msrvtt_jsfusion", "semicolon/MSRVTT_JSFUSION_test.csv",
                                 ("msrvtt_1ka", "semicolon/MSRVTT_JSFUSION_test.csv")),
    "jsfusion_comma": Joined("msrvtt_jsfusion", "comma/MSRVTT_JSFUSION_test.csv",
                             ("msrvtt_1ka", "comma/MSRVTT_JSFUSION_test.csv")),
    "jsfusion_on_msrvtt_shards": Joined("msrvtt", "MSRVTT_data.json",
                                        ("msrvtt_1ka", "comma/MSRVTT_JSFUSION_test.csv"), same_texts=False),
    "msvd": Joined("msvd", "AllVideoDescriptions.txt", ("msvd", "AllVideoDescriptions.txt", "test_list.txt")),
    "msvd_qa": Joined("msvd", "AllVideoDescriptions.txt", ("msvd_qa", "train_qa.json", "youtube_mapping.txt"),
                      same_texts=False),
    "didemo": Joined("didemo", "test_data.json", ("didemo", "test_data.json")),
}
DATASET_OF = {"msrvtt": _msrvtt_files, "msrvtt_jsfusion": _msrvtt_files, "msvd": _msvd_files,
              "didemo": _didemo_files}


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory, clip: bytes) -> Callable[[str], Path]:
    """shard format -> the folder holding that dataset's public files and videos (written once)."""
    folders: dict[Callable, Path] = {}

    def folder(shard_format: str) -> Path:
        write = DATASET_OF[shard_format]
        if write not in folders:
            folders[write] = tmp_path_factory.mktemp(write.__name__.strip("_"))
            write(folders[write], clip)
        return folders[write]

    return folder


def _build(fmt: str, manifest: Path, media_root: Path, out: Path, *extra: str) -> dict[str, dict]:
    """Real shards of `manifest`: {__key__: sample json}."""
    build_shards.main(["--manifest", str(manifest), "--format", fmt, "--media-root", str(media_root),
                       "--out", str(out), "--workers", "1", *extra])
    samples = {s["__key__"]: json.loads(s["json"]) for s in raw_samples(out)}
    assert all(SAFE_KEY.fullmatch(k) for k in samples), sorted(samples)
    return samples


@pytest.mark.parametrize("case", sorted(JOINED))
def test_dataset_keys_every_annotation_video_is_a_shard_key(public: Callable[[str], Path], tmp_path: Path,
                                                            case: str) -> None:
    spec = JOINED[case]
    root = public(spec.shard_format)
    samples = _build(spec.shard_format, root / spec.shard_manifest, root / "videos", tmp_path / "shards")
    fmt, *files = spec.annotation
    build_annotation([fmt, *(str(root / f) for f in files), "--out", str(tmp_path / "ann.json")])
    items = load_annotation(tmp_path / "ann.json").items
    assert items and {i["video"] for i in items} <= set(samples), (sorted(samples), [i["video"] for i in items])
    if spec.same_texts:
        assert all(samples[i["video"]]["captions"] == i["texts"] for i in items)


def test_dataset_keys_one_key_per_video_whatever_the_file_calls_it() -> None:
    assert {msrvtt.key(v) for v in (7010, "7010", "video7010", "msr7010", "video7010.mp4", " video7010 ")} == \
        {"video7010"}
    assert didemo.key("12090392@N02_13482799053_87ef417396.mov") == "12090392_N02_13482799053_87ef417396"
    assert didemo.key("12090392_N02_13482799053_87ef417396.mp4") == "12090392_N02_13482799053_87ef417396"
    with pytest.raises(ValueError, match="MSR-VTT video id"):
        msrvtt.key("")


def _shard_only(root: Path, clip: bytes) -> dict[str, tuple[Path, list[str], list[str]]]:
    """format -> (manifest, extra build flags, the keys its key function gives)."""
    for name in ("001_050/1066.mp4", "001_050/1067.mp4", "clips/a.mp4", "clips/b.mp4"):
        _write(root / name, "").write_bytes(clip)
    for name in ("imgs/a.jpg", "imgs/b.jpg", "val/7.jpg", "val/9.jpg", "VG_100K/12.jpg", "VG_100K_2/13.jpg"):
        _write(root / name, "").write_bytes(jpeg_bytes(16, 12, seed=len(name)))
    coco_json = {"images": [{"id": i, "file_name": f"val/{i}.jpg"} for i in (7, 9)],
                 "annotations": [{"image_id": i, "caption": f"image {i}"} for i in (7, 9)]}
    vg_json = [{"id": i, "regions": [{"phrase": f"region of {i}", "image_id": i}]} for i in (12, 13)]
    urls = _write(root / "urls.tsv", "http://x/a.jpg\timgs/a.jpg\nhttp://x/b.jpg\timgs/b.jpg\n")
    return {
        "webvid": (_write(root / "webvid.csv", "videoid,contentUrl,duration,page_dir,name\n"
                                               "1066,u,PT1S,001_050,lake\n1067,u,PT1S,001_050,sea\n"),
                   [], [webvid.key(v) for v in ("1066", "1067")]),
        "cc3m": (_write(root / "cc3m.tsv", "a dog\thttp://x/a.jpg\na cat\thttp://x/b.jpg\n"),
                 ["--url-map", str(urls)], [cc3m.key(line) for line in (1, 2)]),
        "coco": (_write(root / "coco.json", coco_json), [], [coco.key(i) for i in (7, 9)]),
        "vg": (_write(root / "vg.json", vg_json), [], [vg.key(i) for i in (12, 13)]),
        "jsonl": (_write(root / "m.jsonl", '{"path": "clips/a.mp4", "caption": "x", "key": "clip.1"}\n'
                                           '{"path": "clips/b.mp4", "caption": "y"}\n'), [],
                  [generic.key("clip.1", "clips/a.mp4"), generic.key(None, "clips/b.mp4")]),
        "csv": (_write(root / "m.csv", "path,caption,id\nclips/a.mp4,x,7\nclips/b.mp4,y,\n"), [],
                [generic.key("7", "clips/a.mp4"), generic.key(None, "clips/b.mp4")]),
    }


@pytest.mark.parametrize("fmt", ["webvid", "cc3m", "coco", "vg", "jsonl", "csv"])
def test_dataset_keys_shard_only_formats_carry_their_key_function(tmp_path: Path, clip: bytes, fmt: str) -> None:
    manifest, flags, expected = _shard_only(tmp_path / "in", clip)[fmt]
    samples = _build(fmt, manifest, tmp_path / "in", tmp_path / "shards", *flags)
    assert sorted(samples) == sorted(expected) and len(set(expected)) == len(expected)


def test_dataset_keys_resharded_wds_keeps_its_keys(tmp_path: Path, clip: bytes) -> None:
    keys = ["000000001", "v2d-000000002"]
    source = write_set(tmp_path / "v2d", [(k, {"mp4": clip, "json": meta_bytes([f"clip {k}"])}) for k in keys])
    samples = _build("wds", Path(f"{source}-000000.tar"), tmp_path, tmp_path / "shards")
    assert sorted(samples) == sorted(wds.key(k) for k in keys)
