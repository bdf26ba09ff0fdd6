"""Benchmark annotation files, in each dataset's public layout, read into snps3_ds annotations.

One function per layout; each returns an `Annotation` (snps3_ds.downstream.annotations). Video keys are
made exactly as the shard readers make them (`safe_key` of the same id, snps3_ds.datasets.benchmarks),
so the annotation joins to shards built from the same dataset.

Bad rows: a file that is not in the expected layout at all (not JSON, wrong header) raises `ReaderError`
at once. Rows with a missing or malformed field are collected; by default the reader then raises one
`ReaderError` giving their count and the first few (file, line or item, key, expected form). With
`skip_bad=True` those rows are left out and the count and first few are logged as a warning instead.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snps3_ds.datasets.base import MEDIA_SUFFIXES, group_captions, safe_key
from snps3_ds.downstream.annotations import MC_OPTIONS, Annotation, top_answers

log = logging.getLogger(__name__)
DEFAULT_TOP_ANSWERS = {"msrvtt_qa": 1500, "msvd_qa": 1000}  # REFERENCE §5.2 num_labels
_SHOWN = 5  # bad rows quoted in a message


class ReaderError(ValueError):
    """A benchmark file that cannot be read as its layout; names the file, line/item and key."""


class _BadRows:
    """Collects per-row problems of one file; `finish` raises or logs them."""

    def __init__(self, path: Path, skip_bad: bool) -> None:
        self.path, self.skip_bad, self.problems = path, skip_bad, []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def finish(self) -> None:
        if not self.problems:
            return
        shown = "\n  ".join(self.problems[:_SHOWN])
        more = f"\n  ... and {len(self.problems) - _SHOWN} more" if len(self.problems) > _SHOWN else ""
        if not self.skip_bad:
            raise ReaderError(f"{self.path}: {len(self.problems)} bad row(s) (skip them with --skip-bad):"
                              f"\n  {shown}{more}")
        log.warning("%s: skipped %d bad row(s):\n  %s%s", self.path, len(self.problems), shown, more)


# --- keys and small file helpers ---------------------------------------------------------------
def msrvtt_key(video_id: int | str) -> str:
    """'video7010' from MSRVTT_data.json / JSFusion ids, or from MSRVTT-QA's bare int 7010."""
    text = str(video_id).strip()
    if isinstance(video_id, bool) or not text:
        raise ValueError(f"expected an MSR-VTT video id (video<N> or <N>), got {video_id!r}")
    return safe_key(f"video{text}" if text.isdigit() else text)


def didemo_key(video: str) -> str:
    """The key read_didemo gives a DiDeMo video: its name without a media extension, made safe."""
    stem = Path(video).stem if Path(video).suffix.lower() in MEDIA_SUFFIXES else video
    return safe_key(stem)


def _load_json(path: Path, expected: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReaderError(f"{path}: file not found (expected {expected})") from None
    except json.JSONDecodeError as err:
        raise ReaderError(f"{path}: not JSON ({err}); expected {expected}") from None


def _read_lines(path: Path, expected: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ReaderError(f"{path}: file not found (expected {expected})") from None


def _json_list(path: Path, expected: str) -> list[Any]:
    data = _load_json(path, expected)
    if not isinstance(data, list):
        raise ReaderError(f"{path}: expected {expected}, got a JSON {type(data).__name__}")
    return data


def _text_field(row: Any, key: str) -> str:
    """A non-empty stripped string field, or ValueError naming the key."""
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"key {key!r}: expected a non-empty string, got {value!r}")
    return value.strip()


def _why(err: Exception) -> str:
    """A row error as text; a KeyError reads as the missing key."""
    return f"missing key {err}" if isinstance(err, KeyError) else str(err)


def split_name(path: Path, prefix: str) -> str:
    """`<prefix>_train|val|test` from a file name such as `train_qa.json` or `test_data.json`."""
    words = re.split(r"[^a-z0-9]+", Path(path).name.lower())
    for split in ("train", "val", "test"):
        if split in words or (split == "val" and "validate" in words):
            return f"{prefix}_{split}"
    raise ReaderError(f"{path}: cannot tell the split (train/val/test) from the file name; "
                      f"pass a split name (--split-name)")


def _retrieval(split: str, source: Path, texts: dict[str, list[str]]) -> Annotation:
    if not texts:
        raise ReaderError(f"{source}: no videos with text found")
    items = [{"video": key, "texts": t} for key, t in texts.items()]
    return Annotation("retrieval", split, items, source=str(source))


# --- retrieval ------------------------------------------------------------------------------------
def _msrvtt_captions(data_json: Path, bad: _BadRows) -> dict[str, list[str]]:
    """{video key: captions} from MSRVTT_data.json's `sentences`."""
    data = _load_json(data_json, "MSRVTT_data.json with 'sentences'")
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise ReaderError(f"{data_json}: expected MSRVTT_data.json, an object with a 'sentences' list")
    pairs = []
    for i, sentence in enumerate(data["sentences"]):
        try:
            pairs.append((msrvtt_key(sentence["video_id"]), _text_field(sentence, "caption")))
        except (KeyError, TypeError, ValueError) as err:
            bad.add(f"sentences[{i}]", f"{_why(err)} (expected {{video_id, caption}})")
    return group_captions(pairs)


def _video_list(path: Path) -> list[tuple[int, str]]:
    """(line, video id) of a split list: a csv with a `video_id` column (CLIP4Clip/Frozen
    MSRVTT_train.9k.csv) or plain lines of one id each (train_list_jsfusion.txt, MSVD test_list.txt)."""
    lines = _read_lines(path, "a video list")
    if lines and "video_id" in next(csv.reader([lines[0]])):
        rows = csv.DictReader(lines)
        return [(n, row["video_id"].strip()) for n, row in enumerate(rows, 2) if row.get("video_id", "").strip()]
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def read_msrvtt_train(split_list: Path, data_json: Path, split: str | None = None,
                      skip_bad: bool = False) -> Annotation:
    """MSR-VTT 7k/9k training list + MSRVTT_data.json: every caption of each listed video."""
    split_list, data_json = Path(split_list), Path(data_json)
    if split is None:
        sizes = [s for s in ("7k", "9k") if s in split_list.name.lower()]
        if len(sizes) != 1:
            raise ReaderError(f"{split_list}: cannot tell 7k from 9k by the file name; pass --split-name")
        split = f"msrvtt_{sizes[0]}_train"
    bad = _BadRows(data_json, skip_bad)
    captions = _msrvtt_captions(data_json, bad)
    bad.finish()
    bad, texts = _BadRows(split_list, skip_bad), {}
    for line, video in _video_list(split_list):
        key = msrvtt_key(video)
        if key not in captions:
            bad.add(f"line {line}", f"video_id {video!r} has no sentences in {data_json.name}")
        else:
            texts[key] = captions[key]
    bad.finish()
    return _retrieval(split, split_list, texts)


def read_msrvtt_1ka(path: Path, split: str = "msrvtt_1ka", skip_bad: bool = False) -> Annotation:
    """MSRVTT_JSFUSION_test.csv (`key,vid_key,video_id,sentence`, ',' or ';' separated): one caption per
    video. The sentence is the last field, so a separator inside it is kept."""
    path = Path(path)
    lines = _read_lines(path, "MSRVTT_JSFUSION_test.csv")
    sep = ";" if lines and ";" in lines[0] else ","
    if not lines or [f.strip() for f in lines[0].split(sep)][:3] != ["key", "vid_key", "video_id"]:
        raise ReaderError(f"{path}: expected a header `key,vid_key,video_id,sentence` (',' or ';'), "
                          f"got {lines[:1]}")
    bad, texts = _BadRows(path, skip_bad), {}
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = next(csv.reader([line], delimiter=sep)) if sep == "," else line.split(sep, 3)
        if len(parts) >= 4:
            parts = parts[:3] + [sep.join(parts[3:])]
        if len(parts) != 4 or not parts[2].strip() or not parts[3].strip():
            bad.add(f"line {number}", "expected `key,vid_key,video_id,sentence` with a video_id and a sentence")
            continue
        captions = texts.setdefault(msrvtt_key(parts[2]), [])
        if parts[3].strip() not in captions:
            captions.append(parts[3].strip())
    bad.finish()
    return _retrieval(split, path, texts)


def read_didemo(path: Path, split: str | None = None, skip_bad: bool = False) -> Annotation:
    """DiDeMo {train,val,test}_data.json: paragraph retrieval, a video's descriptions joined with " "
    in file order (as read_didemo builds the shard caption)."""
    path = Path(path)
    data = _json_list(path, "a DiDeMo JSON list of {video, description, times}")
    bad, sentences = _BadRows(path, skip_bad), {}
    for i, entry in enumerate(data):
        try:
            key, text = didemo_key(_text_field(entry, "video")), _text_field(entry, "description")
        except ValueError as err:
            bad.add(f"item {i}", f"{err} (expected {{video, description, times}})")
            continue
        sentences.setdefault(key, []).append(text)
    bad.finish()
    texts = {key: [" ".join(parts)] for key, parts in sentences.items()}
    return _retrieval(split or split_name(path, "didemo"), path, texts)


def _msvd_captions(path: Path) -> dict[str, list[str]]:
    """{video name: captions} from `<video> <caption>` lines (AllVideoDescriptions.txt), as read_msvd."""
    pairs = []
    for line in _read_lines(path, "MSVD `<video> <caption>` lines"):
        video, _, caption = line.strip().partition(" ")
        if video and not video.startswith("#") and caption.strip():
            pairs.append((video, caption.strip()))
    if not pairs:
        raise ReaderError(f"{path}: no `<video> <caption>` lines found")
    return group_captions(pairs)


def read_msvd(captions_path: Path, split_list: Path, split: str | None = None,
              skip_bad: bool = False) -> Annotation:
    """MSVD captions + a split list of video names (e.g. test_list.txt): many captions per video."""
    captions = _msvd_captions(Path(captions_path))
    bad, texts = _BadRows(Path(split_list), skip_bad), {}
    for line, video in _video_list(Path(split_list)):
        if video not in captions:
            bad.add(f"line {line}", f"video {video!r} has no captions in {Path(captions_path).name}")
        else:
            texts[safe_key(video)] = captions[video]
    bad.finish()
    return _retrieval(split or split_name(Path(split_list), "msvd"), Path(split_list), texts)


# --- open-ended QA --------------------------------------------------------------------------------
def coverage(ann: Annotation) -> tuple[int, int]:
    """(questions whose answer is in the vocabulary, questions)."""
    return sum(ann.label_of(item["answer"]) >= 0 for item in ann.items), len(ann.items)


def _read_qa(path: Path, key_of: Callable[[Any], str], split: str, answers: list[str] | None,
             top_n: int, skip_bad: bool) -> Annotation:
    """Xu et al. 2017 QA json: a list of {answer, id, question, video_id}."""
    data = _json_list(path, "a QA JSON list of {answer, id, question, video_id}")
    bad, items = _BadRows(path, skip_bad), []
    for i, entry in enumerate(data):
        try:
            item = {"video": key_of(entry["video_id"]), "question": _text_field(entry, "question"),
                    "answer": _text_field(entry, "answer")}
        except (KeyError, TypeError, ValueError) as err:
            bad.add(f"item {i}", f"{_why(err)} (expected {{answer, id, question, video_id}})")
            continue
        if "id" in entry:
            item["id"] = entry["id"]
        items.append(item)
    bad.finish()
    if not items:
        raise ReaderError(f"{path}: no questions found")
    if top_n < 1:
        raise ReaderError(f"--top-answers must be >= 1 (got {top_n})")
    vocab = answers if answers is not None else top_answers((it["answer"] for it in items), top_n)
    return Annotation("qa", split, items, answers=list(vocab), source=str(path))


def read_msrvtt_qa(path: Path, split: str | None = None, answers: list[str] | None = None,
                   top_n: int = DEFAULT_TOP_ANSWERS["msrvtt_qa"], skip_bad: bool = False) -> Annotation:
    """MSRVTT-QA {train,val,test}_qa.json; video_id N is the video `video<N>`. Without `answers` the
    vocabulary is this file's top-`top_n` answers (use that only for the training file)."""
    path = Path(path)
    return _read_qa(path, msrvtt_key, split or split_name(path, "msrvtt_qa"), answers, top_n, skip_bad)


def read_youtube_mapping(path: Path) -> dict[str, str]:
    """MSVD-QA youtube_mapping.txt: `<youtube name> vid<N>` lines -> {"vid<N>": youtube name}."""
    mapping = {}
    for number, line in enumerate(_read_lines(path, "`<youtube name> vid<N>` lines"), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not re.fullmatch(r"vid\d+", fields[1]):
            raise ReaderError(f"{path}: line {number}: expected `<youtube name> vid<N>`, got {line!r}")
        mapping[fields[1]] = fields[0]
    if not mapping:
        raise ReaderError(f"{path}: no `<youtube name> vid<N>` lines found")
    return mapping


def read_msvd_qa(path: Path, youtube_mapping: Path, split: str | None = None,
                 answers: list[str] | None = None, top_n: int = DEFAULT_TOP_ANSWERS["msvd_qa"],
                 skip_bad: bool = False) -> Annotation:
    """MSVD-QA {train,val,test}_qa.json; video_id N is `vid<N>` in youtube_mapping.txt, whose YouTube
    name is the MSVD video (and shard key)."""
    path, mapping = Path(path), read_youtube_mapping(Path(youtube_mapping))

    def key_of(video_id: Any) -> str:
        name = f"vid{video_id}" if str(video_id).isdigit() else str(video_id)
        if name not in mapping:
            raise ValueError(f"key 'video_id': {video_id!r} is not in {Path(youtube_mapping).name}")
        return safe_key(mapping[name])

    return _read_qa(path, key_of, split or split_name(path, "msvd_qa"), answers, top_n, skip_bad)


# --- multiple choice ------------------------------------------------------------------------------
def _mc_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) from a JSON list, JSON lines, or a tab/comma csv with columns a1..a5."""
    lines = _read_lines(path, "MSR-VTT multiple-choice annotations")
    head = next((line for line in lines if line.strip()), "")
    if head.lstrip().startswith("["):
        data = _json_list(path, "a JSON list of {clip_name, options, answer}")
        return [(f"item {i}", row) for i, row in enumerate(data)]
    if head.lstrip().startswith("{"):
        rows = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ReaderError(f"{path}: line {number}: not JSON ({err})") from None
        return rows
    table = csv.DictReader(lines, delimiter="\t" if "\t" in head else ",")
    return [(f"line {n}", row) for n, row in enumerate(table, 2)]


def _mc_item(row: Any) -> dict[str, Any]:
    """One {video, options, answer} from a known public MC row form; ValueError names the key."""
    if not isinstance(row, dict):
        raise ValueError(f"expected an object, got {type(row).__name__}")
    video = next((row[k] for k in ("clip_name", "video", "video_id") if row.get(k)), None)
    if video is None and str(row.get("vid_key", "")).startswith("msr"):  # JSFusion csv: msr7010
        video = "video" + str(row["vid_key"])[3:]
    if video is None:
        raise ValueError("no video: expected key 'clip_name' (or video, video_id, vid_key)")
    video = str(video)
    if Path(video).suffix.lower() in MEDIA_SUFFIXES:
        video = Path(video).stem
    options = row.get("options", row.get("caption"))
    if options is None and "a1" in row:
        options = [row.get(f"a{i}") for i in range(1, MC_OPTIONS + 1)]
    if (not isinstance(options, list) or len(options) != MC_OPTIONS
            or not all(isinstance(o, str) and o.strip() for o in options)):
        raise ValueError(f"key 'options': expected {MC_OPTIONS} non-empty strings, got {options!r}")
    answer = row.get("answer")
    if isinstance(answer, bool) or not str(answer).strip().isdigit() or int(answer) >= MC_OPTIONS:
        raise ValueError(f"key 'answer': expected an option index 0..{MC_OPTIONS - 1}, got {answer!r}")
    return {"video": msrvtt_key(video), "options": [o.strip() for o in options], "answer": int(answer)}


def read_msrvtt_mc(path: Path, split: str = "msrvtt_mc", skip_bad: bool = False) -> Annotation:
    """MSR-VTT multiple choice (JSFusion test): a JSON list or JSON lines of {clip_name, options,
    answer} (answer a 0-based index, int or digit string), or the tab-separated MSR_MC_test.csv
    (vid_key/video_id, a1..a5, answer)."""
    path = Path(path)
    bad, items = _BadRows(path, skip_bad), []
    for where, row in _mc_rows(path):
        try:
            items.append(_mc_item(row))
        except ValueError as err:
            bad.add(where, str(err))
    bad.finish()
    if not items:
        raise ReaderError(f"{path}: no multiple-choice rows found")
    return Annotation("mcqa", split, items, source=str(path))
