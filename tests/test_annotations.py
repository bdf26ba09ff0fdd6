"""Downstream annotation files: the format, and readers for each benchmark's public layout (DESIGN §4.4).

Every reader runs on a few lines written here in that dataset's public form; keys are checked against
the shard readers of the same dataset module (snps3_ds.datasets.<dataset>.read_items) so the annotation joins
to the shards (tests/test_dataset_keys.py checks that join on real shards).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snps3_ds.datasets import didemo, jsfusion, msrvtt, msvd
from snps3_ds.datasets.annotations_cli import main as build_main
from snps3_ds.datasets.base import ManifestError, ReaderOptions
from snps3_ds.datasets.qa import coverage
from snps3_ds.datasets.registry import read_manifest
from snps3_ds.downstream.annotations import (
    FORMAT, Annotation, AnnotationError, load_annotation, top_answers, write_annotation)


def _write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def _shard_keys(fmt: str, manifest: Path, split: str | None = None) -> list[str]:
    """Sample keys the shard builder would give the same file (media need not exist to get keys)."""
    return [item.key for item in read_manifest(fmt, manifest, manifest.parent, ReaderOptions(split=split))]


# --- the format ---------------------------------------------------------------------------------
def test_round_trip_keeps_everything_and_groups_by_video(tmp_path: Path) -> None:
    items = [{"video": "v1", "question": "what is it?", "answer": "dog", "id": 7},
             {"video": "v2", "question": "who?", "answer": "man"},
             {"video": "v1", "question": "what colour?", "answer": "zebra"}]
    ann = Annotation("qa", "x_test", items, answers=["man", "dog"])
    write_annotation(tmp_path / "sub" / "a.json", ann)
    assert not list((tmp_path / "sub").glob("*.tmp"))
    back = load_annotation(tmp_path / "sub" / "a.json")
    assert (back.task, back.split, back.items, back.answers) == ("qa", "x_test", items, ["man", "dog"])
    assert back.source == str(tmp_path / "sub" / "a.json")
    assert json.loads((tmp_path / "sub" / "a.json").read_text())["format"] == FORMAT
    assert [i["question"] for i in back.by_video()["v1"]] == ["what is it?", "what colour?"]
    assert list(back.by_video()) == ["v1", "v2"]
    assert [back.label_of(i["answer"]) for i in items] == [1, 0, -1]  # zebra is out of vocabulary
    mc = Annotation("mcqa", "m", [{"video": "v", "options": list("abcde"), "answer": 4}])
    write_annotation(tmp_path / "mc.json", mc)
    assert load_annotation(tmp_path / "mc.json").items == mc.items
    assert "answers" not in json.loads((tmp_path / "mc.json").read_text())


def test_top_answers_by_frequency_ties_to_first_seen() -> None:
    answers = ["b", "a", "c", "a", "b", "d", "c", "e"]
    assert top_answers(answers, 3) == ["b", "a", "c"]
    assert top_answers(answers) == ["b", "a", "c", "d", "e"]


@pytest.mark.parametrize("data, match", [
    ({"format": "other/1", "task": "qa", "split": "s", "items": []}, "'format'"),
    ({"format": FORMAT, "task": "caption", "split": "s", "items": [{"video": "v"}]}, "'task'"),
    ({"format": FORMAT, "task": "retrieval", "split": "s", "items": [{"video": "v", "texts": ["a"]},
                                                                     {"video": "w", "texts": []}]},
     r"items\[1\]: key 'texts'"),
    ({"format": FORMAT, "task": "retrieval", "split": "s", "items": [{"video": "v.mp4", "texts": ["a"]}]},
     r"items\[0\]: key 'video'"),
    ({"format": FORMAT, "task": "retrieval", "split": "s", "items": [{"video": "v", "texts": ["a"]},
                                                                     {"video": "v", "texts": ["b"]}]},
     "appears twice"),
    ({"format": FORMAT, "task": "qa", "split": "s", "items": [{"video": "v", "question": "q", "answer": "a"}]},
     "key 'answers'"),
    ({"format": FORMAT, "task": "qa", "split": "s", "answers": ["a"],
      "items": [{"video": "v", "question": "", "answer": "a"}]}, r"items\[0\]: key 'question'"),
    ({"format": FORMAT, "task": "mcqa", "split": "s", "items": [{"video": "v", "options": list("abcd"),
                                                                "answer": 0}]}, "key 'options'"),
    ({"format": FORMAT, "task": "mcqa", "split": "s", "items": [{"video": "v", "options": list("abcde"),
                                                                "answer": 5}]}, "key 'answer'"),
    ({"format": FORMAT, "task": "mcqa", "split": "s", "answers": ["a"],
      "items": [{"video": "v", "options": list("abcde"), "answer": 1}]}, "only qa"),
    ({"format": FORMAT, "task": "retrieval", "split": "s"}, "missing key"),
])
def test_load_errors_name_file_item_and_key(tmp_path: Path, data: dict, match: str) -> None:
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(AnnotationError, match=match) as err:
        load_annotation(path)
    assert str(path) in str(err.value)


def test_load_refuses_missing_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="not found"):
        load_annotation(tmp_path / "none.json")
    with pytest.raises(AnnotationError, match="not JSON"):
        load_annotation(_write(tmp_path / "x.json", "{oops"))
    with pytest.raises(AnnotationError, match="key 'texts'"):  # nothing invalid is ever written
        write_annotation(tmp_path / "w.json", Annotation("retrieval", "s", [{"video": "v"}]))
    assert not (tmp_path / "w.json").exists()


# --- retrieval readers ---------------------------------------------------------------------------
MSRVTT_DATA = {
    "videos": [{"video_id": f"video{i}", "split": "train" if i < 3 else "test"} for i in range(4)],
    "sentences": [{"video_id": "video0", "caption": "a man sings", "sen_id": 0},
                  {"video_id": "video1", "caption": "a dog runs", "sen_id": 1},
                  {"video_id": "video0", "caption": "someone is singing ", "sen_id": 2},
                  {"video_id": "video2", "caption": "cars race", "sen_id": 3},
                  {"video_id": "video3", "caption": "a cat sleeps", "sen_id": 4},
                  {"video_id": "video0", "caption": "a man sings", "sen_id": 5}],
}


def test_msrvtt_train_7k_and_9k_lists(tmp_path: Path) -> None:
    data = _write(tmp_path / "MSRVTT_data.json", MSRVTT_DATA)
    seven = _write(tmp_path / "MSRVTT_train.7k.csv", "video_id\nvideo2\nvideo0\n")
    nine = _write(tmp_path / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo1\nvideo2\n")
    ann7 = msrvtt.read_retrieval(seven, data)
    assert ann7.split == "msrvtt_7k_train" and ann7.task == "retrieval"
    assert ann7.items == [{"video": "video2", "texts": ["cars race"]},
                          {"video": "video0", "texts": ["a man sings", "someone is singing"]}]
    ann9 = msrvtt.read_retrieval(nine, data)
    assert ann9.split == "msrvtt_9k_train" and [i["video"] for i in ann9.items] == ["video0", "video1", "video2"]
    # the same keys the shard builder gives these videos
    assert set(_shard_keys("msrvtt", data, "train")) == {i["video"] for i in ann9.items}
    plain = _write(tmp_path / "train_list_jsfusion.txt", "video1\nvideo0\n")
    assert msrvtt.read_retrieval(plain, data, split="msrvtt_9k_train").split == "msrvtt_9k_train"
    with pytest.raises(ManifestError, match="7k from 9k"):
        msrvtt.read_retrieval(plain, data)


def test_msrvtt_train_missing_video_is_reported_or_skipped(tmp_path: Path) -> None:
    data = _write(tmp_path / "MSRVTT_data.json", MSRVTT_DATA)
    listing = _write(tmp_path / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo99\n")
    with pytest.raises(ManifestError, match=r"(?s)MSRVTT_train\.9k\.csv: 1 bad row.*line 3: video_id 'video99'"):
        msrvtt.read_retrieval(listing, data)
    assert [i["video"] for i in msrvtt.read_retrieval(listing, data, skip_bad=True).items] == ["video0"]
    broken = _write(tmp_path / "broken.json", {"sentences": [{"video_id": "video0"}]})
    with pytest.raises(ManifestError, match=r"(?s)broken\.json: 1 bad row.*sentences\[0\]: key 'caption'"):
        msrvtt.read_retrieval(listing, broken)


@pytest.mark.parametrize("sep", [";", ","])
def test_msrvtt_1ka_jsfusion_csv(tmp_path: Path, sep: str) -> None:
    rows = [f"key{sep}vid_key{sep}video_id{sep}sentence",
            f"ret0{sep}msr9770{sep}video9770{sep}a person is connecting something to system",
            f'ret1{sep}msr7606{sep}video7606{sep}"a little girl does gymnastics, well"' if sep == ","
            else f"ret1{sep}msr7606{sep}video7606{sep}a little girl does gymnastics; well"]
    path = _write(tmp_path / "MSRVTT_JSFUSION_test.csv", "\r\n".join(rows) + "\r\n")
    ann = jsfusion.read_retrieval(path)
    assert ann.split == "msrvtt_1ka"
    assert ann.items[0] == {"video": "video9770", "texts": ["a person is connecting something to system"]}
    assert ann.items[1]["texts"] == [f"a little girl does gymnastics{sep} well"]
    assert _shard_keys("msrvtt_jsfusion", path) == ["video9770", "video7606"]  # both separators, as the reader


def test_msrvtt_1ka_bad_header_and_rows(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="header"):
        jsfusion.read_retrieval(_write(tmp_path / "a.csv", "id,sentence\n1,x\n"))
    path = _write(tmp_path / "b.csv", "key;vid_key;video_id;sentence\nret0;msr1;video1;ok\nret1;msr2\n")
    with pytest.raises(ManifestError, match=r"(?s)b\.csv: 1 bad row.*line 3"):
        jsfusion.read_retrieval(path)
    assert len(jsfusion.read_retrieval(path, skip_bad=True).items) == 1


def test_didemo_paragraphs_in_file_order_with_shard_keys(tmp_path: Path) -> None:
    entries = [{"video": "12090392@N02_13482799053_87ef417396.mov", "description": "a girl waves.",
                "times": [[0, 0]], "annotation_id": 1},
               {"video": "54322086@N00_5307455926_ed3ee16ad2.avi", "description": "dog jumps",
                "times": [[1, 2]], "annotation_id": 2},
               {"video": "12090392@N02_13482799053_87ef417396.mov", "description": " she turns around ",
                "times": [[2, 3]], "annotation_id": 3}]
    path = _write(tmp_path / "test_data.json", entries)
    ann = didemo.read_retrieval(path)
    assert ann.split == "didemo_test"
    assert ann.items[0] == {"video": "12090392_N02_13482799053_87ef417396",
                            "texts": ["a girl waves. she turns around"]}
    assert [i["video"] for i in ann.items] == _shard_keys("didemo", path)
    entries[1] = {"video": "x.mp4", "times": []}
    with pytest.raises(ManifestError, match=r"(?s)val_data\.json: 1 bad row.*item 1: key 'description'"):
        didemo.read_retrieval(_write(tmp_path / "val_data.json", entries))
    with pytest.raises(ManifestError, match="split"):
        didemo.read_retrieval(_write(tmp_path / "didemo.json", entries[:1]))


def test_msvd_captions_and_split_list(tmp_path: Path) -> None:
    captions = _write(tmp_path / "AllVideoDescriptions.txt",
                      "# comment line\n-4wsuPCjDBc_5_15 a squirrel eats a peanut\n"
                      "-4wsuPCjDBc_5_15 a chipmunk is eating\n-7KMZQEsJW4_205_208 a man plays guitar\n"
                      "-7KMZQEsJW4_205_208\n00jrXRMlZOY_0_10 a woman slices a tomato\n")
    test_list = _write(tmp_path / "test_list.txt", "00jrXRMlZOY_0_10\n-4wsuPCjDBc_5_15\n")
    ann = msvd.read_retrieval(captions, test_list)
    assert ann.split == "msvd_test"
    assert ann.items == [{"video": "00jrXRMlZOY_0_10", "texts": ["a woman slices a tomato"]},
                         {"video": "-4wsuPCjDBc_5_15",
                          "texts": ["a squirrel eats a peanut", "a chipmunk is eating"]}]
    assert {i["video"] for i in ann.items} <= set(_shard_keys("msvd", captions))
    bad_list = _write(tmp_path / "train_list.txt", "00jrXRMlZOY_0_10\nnot_a_video\n")
    with pytest.raises(ManifestError, match=r"(?s)train_list\.txt: 1 bad row.*line 2: video 'not_a_video'"):
        msvd.read_retrieval(captions, bad_list)


# --- open-ended QA -------------------------------------------------------------------------------
def _qa(rows: list[tuple[int, str, str]], start: int = 0) -> list[dict]:
    return [{"answer": a, "id": start + i, "question": q, "video_id": v} for i, (v, q, a) in enumerate(rows)]


def test_msrvtt_qa_vocabulary_from_train_and_oov_in_test(tmp_path: Path) -> None:
    train = _write(tmp_path / "train_qa.json", _qa([(0, "what is a man doing?", "sing"),
                                                    (0, "who is singing?", "man"),
                                                    (1, "what runs?", "dog"),
                                                    (2, "who talks?", "man"),
                                                    (2, "what is shown?", "car")]))
    ann = msrvtt.read_qa(train, top_n=2)
    assert ann.split == "msrvtt_qa_train" and ann.task == "qa"
    assert ann.answers == ["man", "sing"]  # man x2, then sing (seen before dog and car)
    assert ann.items[0] == {"video": "video0", "question": "what is a man doing?", "answer": "sing", "id": 0}
    assert coverage(ann) == (3, 5)
    test = _write(tmp_path / "test_qa.json", _qa([(7010, "who sings?", "man"), (7011, "what runs?", "dog")]))
    ann_test = msrvtt.read_qa(test, answers=ann.answers)
    assert [ann_test.label_of(i["answer"]) for i in ann_test.items] == [0, -1]
    assert ann_test.answers == ann.answers and ann_test.items[0]["video"] == "video7010"
    assert msrvtt.read_qa(train).answers == ["man", "sing", "dog", "car"]  # default 1500 keeps all
    bad = _write(tmp_path / "val_qa.json", [{"answer": "x", "id": 0, "question": "q?"}])
    with pytest.raises(ManifestError, match=r"(?s)val_qa\.json: 1 bad row.*item 0: missing key 'video_id'"):
        msrvtt.read_qa(bad, answers=["x"])


def test_msvd_qa_maps_video_ids_through_youtube_mapping(tmp_path: Path) -> None:
    mapping = _write(tmp_path / "youtube_mapping.txt", "-4wsuPCjDBc_5_15 vid1\n-7KMZQEsJW4_205_208 vid2\n")
    train = _write(tmp_path / "train_qa.json", _qa([(1, "what is eating?", "squirrel"),
                                                    (2, "who plays?", "man"), (2, "what is played?", "guitar")]))
    ann = msvd.read_qa(train, mapping)
    assert ann.split == "msvd_qa_train" and len(ann.answers) == 3
    assert [i["video"] for i in ann.items] == ["-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208", "-7KMZQEsJW4_205_208"]
    bad = _write(tmp_path / "test_qa.json", _qa([(3, "what?", "man")]))
    with pytest.raises(ManifestError, match=r"(?s)test_qa\.json: 1 bad row.*item 0: key 'video_id': 3 is not in"):
        msvd.read_qa(bad, mapping, answers=ann.answers)
    with pytest.raises(ManifestError, match=r"line 1: expected `<youtube name> vid<N>`"):
        msvd.read_qa(train, _write(tmp_path / "m.txt", "name 1\n"))


# --- multiple choice -----------------------------------------------------------------------------
OPTIONS = ["a man is singing", "a dog runs", "cars race", "a cat sleeps", "people dance"]


def test_msrvtt_mc_json_list_jsonl_and_tsv(tmp_path: Path) -> None:
    rows = [{"clip_name": "video7010", "options": OPTIONS, "answer": 2, "qid": "mc0"},
            {"clip_name": "video7011", "options": OPTIONS[::-1], "answer": "0", "qid": "mc1"}]
    expected = [{"video": "video7010", "options": OPTIONS, "answer": 2},
                {"video": "video7011", "options": OPTIONS[::-1], "answer": 0}]
    ann = msrvtt.read_mc(_write(tmp_path / "MSRVTT_MC_test.json", rows))
    assert (ann.task, ann.split, ann.items) == ("mcqa", "msrvtt_mc", expected)
    jsonl = "\n".join(json.dumps(r) for r in rows) + "\n"
    assert msrvtt.read_mc(_write(tmp_path / "msrvtt_mc_test.jsonl", jsonl)).items == expected
    tsv = "\n".join(["key\tvid_key\ta1\ta2\ta3\ta4\ta5\tanswer",
                     "mc0\tmsr7010\t" + "\t".join(OPTIONS) + "\t2",
                     "mc1\tmsr7011\t" + "\t".join(OPTIONS[::-1]) + "\t0"])
    assert msrvtt.read_mc(_write(tmp_path / "MSR_MC_test.csv", tsv)).items == expected


def test_msrvtt_mc_bad_rows_name_the_key(tmp_path: Path) -> None:
    rows = [{"clip_name": "video1", "options": OPTIONS[:4], "answer": 0},
            {"clip_name": "video2", "options": OPTIONS, "answer": 7},
            {"options": OPTIONS, "answer": 1}]
    path = _write(tmp_path / "mc.json", rows)
    with pytest.raises(ManifestError,
                       match=r"(?s)mc\.json: 3 bad row.*item 0: key 'options'.*item 1: key 'answer'.*item 2"):
        msrvtt.read_mc(path)
    with pytest.raises(ManifestError, match="no multiple-choice rows"):
        msrvtt.read_mc(path, skip_bad=True)


# --- the command line ----------------------------------------------------------------------------
def test_cli_train_then_test_shares_vocabulary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = _write(tmp_path / "train_qa.json", _qa([(0, "who?", "man"), (1, "what?", "dog"), (1, "who?", "man")]))
    test = _write(tmp_path / "test_qa.json", _qa([(5, "who?", "man"), (6, "what?", "cat")]))
    info = build_main(["msrvtt_qa", str(train), "--out", str(tmp_path / "tr.json"), "--top-answers", "1"])
    assert info["answers"] == 1 and info["covered"] == 2 and "covers 2/3" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--answers"):
        build_main(["msrvtt_qa", str(test), "--out", str(tmp_path / "te.json")])
    info = build_main(["msrvtt_qa", str(test), "--out", str(tmp_path / "te.json"),
                       "--answers", str(tmp_path / "tr.json")])
    assert info["split"] == "msrvtt_qa_test" and info["coverage"] == 0.5
    assert load_annotation(tmp_path / "te.json").answers == ["man"]
    with pytest.raises(SystemExit):  # msvd_qa needs the youtube mapping too
        build_main(["msvd_qa", str(train), "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="item 0: key 'description'"):
        build_main(["didemo", str(_write(tmp_path / "train_data.json", [{"video": "x"}])),
                    "--out", str(tmp_path / "d.json")])


def test_cli_retrieval_and_mc(tmp_path: Path) -> None:
    data = _write(tmp_path / "MSRVTT_data.json", MSRVTT_DATA)
    listing = _write(tmp_path / "MSRVTT_train.7k.csv", "video_id\nvideo0\nvideo1\n")
    info = build_main(["msrvtt_train", str(listing), str(data), "--out", str(tmp_path / "r.json")])
    assert info == {"task": "retrieval", "split": "msrvtt_7k_train", "items": 2, "videos": 2, "texts": 3}
    mc = _write(tmp_path / "MSRVTT_MC_test.json", [{"clip_name": "video9", "options": OPTIONS, "answer": 1}])
    info = build_main(["msrvtt_mc", str(mc), "--out", str(tmp_path / "m.json"), "--split-name", "mc_x"])
    assert load_annotation(tmp_path / "m.json").split == "mc_x" and info["items"] == 1
