"""MSR-VTT: MSRVTT_data.json (shards and the 7k/9k training lists), MSRVTT-QA and MSR-VTT multiple choice.

Every id, whatever file it comes from ('video7010', MSRVTT-QA's 7010, JSFusion's 'msr7010'), becomes a shard
key through `key`, so the shards and every annotation built here join by construction.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from snps3_ds.datasets import qa
from snps3_ds.datasets.base import (BadRows, ManifestError, ReaderOptions, SourceItem, find_media,
                                    group_captions, json_list, load_json, media_stem, read_lines,
                                    retrieval_annotation, row_problem, safe_key, split_name, text_field, video_list)
from snps3_ds.downstream.annotations import MC_OPTIONS, Annotation

QA_TOP_ANSWERS = 1500  # REFERENCE §5.2 num_labels
_MSR = re.compile(r"msr\d+")


def key(video_id: int | str) -> str:
    """The shard key 'video7010' from 'video7010' (MSRVTT_data.json, JSFusion video_id), 7010 (MSRVTT-QA),
    'msr7010' (JSFusion vid_key) or a file name 'video7010.mp4'."""
    text = str(video_id).strip() if isinstance(video_id, (int, str)) and not isinstance(video_id, bool) else ""
    if not text:
        raise ManifestError(f"expected an MSR-VTT video id (video<N>, <N> or msr<N>), got {video_id!r}")
    text = media_stem(text)
    if text.isdigit():
        text = f"video{text}"
    elif _MSR.fullmatch(text):
        text = f"video{text[3:]}"
    return safe_key(text)


def _data_json(path: Path, lists: tuple[str, ...]) -> dict[str, Any]:
    """MSRVTT_data.json, checked to hold the named lists."""
    data = load_json(path, "MSRVTT_data.json")
    if not isinstance(data, dict) or not all(isinstance(data.get(name), list) for name in lists):
        raise ManifestError(f"{path}: expected MSRVTT_data.json, an object with "
                            f"{' and '.join(repr(name) for name in lists)} list(s)")
    return data


def _captions(data: dict[str, Any], bad: BadRows) -> dict[str, list[str]]:
    """{video key: captions} from MSRVTT_data.json's `sentences`; bad sentences go to `bad`."""
    pairs = []
    for i, sentence in enumerate(data["sentences"]):
        try:
            pairs.append((key(sentence["video_id"]), text_field(sentence, "caption")))
        except (KeyError, TypeError, ValueError) as err:
            bad.add(f"sentences[{i}]", f"{row_problem(err)} (expected {{video_id, caption}})")
    return group_captions(pairs)


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """`MSRVTT_data.json` ({videos: [{video_id, split}], sentences: [{video_id, caption}]}); every caption of a
    video in one sample; `--split` keeps one split; media at `<media_root>/<key>.mp4`. A bad sentence or video
    entry becomes a failed sample."""
    data = _data_json(manifest, ("videos", "sentences"))
    bad = BadRows(manifest)
    captions = _captions(data, bad)
    for i, video in enumerate(data["videos"]):
        try:
            name = key(video["video_id"])
        except (KeyError, TypeError, ValueError) as err:
            bad.add(f"videos[{i}]", f"{row_problem(err)} (expected {{video_id, split}})")
            continue
        if not options.split or video.get("split") == options.split:
            yield SourceItem(key=name, path=find_media(media_root, [f"{name}.mp4"]),
                             captions=captions.get(name, []), source="msrvtt", kind="video",
                             extra={"video_id": video["video_id"], "split": video.get("split")})
    yield from bad.as_items("msrvtt")


def read_retrieval(split_list: Path, data_json: Path, split: str | None = None,
                   skip_bad: bool = False) -> Annotation:
    """MSR-VTT 7k/9k training list + MSRVTT_data.json: every caption of each listed video."""
    split_list, data_json = Path(split_list), Path(data_json)
    if split is None:
        sizes = [s for s in ("7k", "9k") if s in split_list.name.lower()]
        if len(sizes) != 1:
            raise ManifestError(f"{split_list}: cannot tell 7k from 9k by the file name; pass --split-name")
        split = f"msrvtt_{sizes[0]}_train"
    bad = BadRows(data_json, skip_bad)
    captions = _captions(_data_json(data_json, ("sentences",)), bad)
    bad.finish()
    bad, texts = BadRows(split_list, skip_bad), {}
    for line, video in video_list(split_list):
        name = key(video)
        if name not in captions:
            bad.add(f"line {line}", f"video_id {video!r} has no sentences in {data_json.name}")
        else:
            texts[name] = captions[name]
    bad.finish()
    return retrieval_annotation(split, split_list, texts)


def read_qa(path: Path, split: str | None = None, answers: list[str] | None = None,
            top_n: int = QA_TOP_ANSWERS, skip_bad: bool = False) -> Annotation:
    """MSRVTT-QA {train,val,test}_qa.json; video_id N is the video `video<N>`. Without `answers` the
    vocabulary is this file's top-`top_n` answers (use that only for the training file)."""
    path = Path(path)
    return qa.read_qa(path, key, split or split_name(path, "msrvtt_qa"), answers, top_n, skip_bad)


def _mc_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) from a JSON list, JSON lines, or a tab/comma csv with columns a1..a5."""
    lines = read_lines(path, "MSR-VTT multiple-choice annotations")
    head = next((line for line in lines if line.strip()), "")
    if head.lstrip().startswith("["):
        data = json_list(path, "a JSON list of {clip_name, options, answer}")
        return [(f"item {i}", row) for i, row in enumerate(data)]
    if head.lstrip().startswith("{"):
        rows = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ManifestError(f"{path}: line {number}: not JSON ({err})") from None
        return rows
    table = csv.DictReader(lines, delimiter="\t" if "\t" in head else ",")
    return [(f"line {n}", row) for n, row in enumerate(table, 2)]


def _mc_item(row: Any) -> dict[str, Any]:
    """One {video, options, answer} from a known public MC row form; ValueError names the key."""
    if not isinstance(row, dict):
        raise ValueError(f"expected an object, got {type(row).__name__}")
    video = next((row[k] for k in ("clip_name", "video", "video_id") if row.get(k)), None)
    if video is None and str(row.get("vid_key", "")).startswith("msr"):  # JSFusion csv: msr7010
        video = row["vid_key"]
    if video is None:
        raise ValueError("no video: expected key 'clip_name' (or video, video_id, vid_key)")
    options = row.get("options", row.get("caption"))
    if options is None and "a1" in row:
        options = [row.get(f"a{i}") for i in range(1, MC_OPTIONS + 1)]
    if (not isinstance(options, list) or len(options) != MC_OPTIONS
            or not all(isinstance(o, str) and o.strip() for o in options)):
        raise ValueError(f"key 'options': expected {MC_OPTIONS} non-empty strings, got {options!r}")
    answer = row.get("answer")
    if isinstance(answer, bool) or not str(answer).strip().isdigit() or int(answer) >= MC_OPTIONS:
        raise ValueError(f"key 'answer': expected an option index 0..{MC_OPTIONS - 1}, got {answer!r}")
    return {"video": key(video), "options": [o.strip() for o in options], "answer": int(answer)}


def read_mc(path: Path, split: str = "msrvtt_mc", skip_bad: bool = False) -> Annotation:
    """MSR-VTT multiple choice (JSFusion test): a JSON list or JSON lines of {clip_name, options,
    answer} (answer a 0-based index, int or digit string), or the tab-separated MSR_MC_test.csv
    (vid_key/video_id, a1..a5, answer)."""
    path = Path(path)
    bad, items = BadRows(path, skip_bad), []
    for where, row in _mc_rows(path):
        try:
            items.append(_mc_item(row))
        except ValueError as err:
            bad.add(where, str(err))
    bad.finish()
    if not items:
        raise ManifestError(f"{path}: no multiple-choice rows found")
    return Annotation("mcqa", split, items, source=str(path))
