"""Zero-shot open-ended QA by answer matching: the tie-aware answer pick and its metrics, a hand-built model
whose answer ranking is known (dual and fusion, chunked and cached statements, 2 ranks == 1), and a smoke run
through launch/evaluate.py on the tiny corpus (an untrained model, and a checkpoint without a QA head)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from snps3_ds.demo.tasks import make_demo_tasks
from snps3_ds.config import RunConfig
from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.text.tokens import tokenize
from snps3_ds.downstream.annotations import load_annotation
from snps3_ds.evaluation import qa_zero_shot
from snps3_ds.evaluation.metrics import qa_accuracy
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.qa_zero_shot import (Statements, ZeroShotOptions, evaluate_qa_zero_shot, pick_answers,
                                              resolve_template,
                                              score_questions, zero_shot_metrics)
from snps3_ds.models.factory import build_model

from conftest import TINY_RECIPE, tiny_overrides

from snps3_ds.run import evaluate

COLOURS = ["red", "green", "blue"]


# --- the pure parts -------------------------------------------------------------------------------
def test_qa_zero_shot_metrics_ties_count_against_and_oov_is_wrong() -> None:
    scores = torch.tensor([[3.0, 1, 2], [1, 1, 0], [1, 1, 0], [0, 5, 1], [2, 2, 2]])
    labels = torch.tensor([0, 0, 2, -1, 1])
    predictions = pick_answers(scores, labels)
    # right answer wins; tied with another (that one is picked); loses; out of vocabulary; all tied
    assert predictions.tolist() == [0, 1, 0, 1, 0]
    assert qa_accuracy(predictions, labels)["acc"] == 20.0
    assert pick_answers(torch.zeros(2, 3), torch.tensor([0, 2])).tolist() == [1, 0]  # a constant scorer gets 0


def test_qa_zero_shot_metrics_names_per_type_and_fusion() -> None:
    records = [{"label": 0, "prediction": 0, "fusion_prediction": 1, "type": "color"},
               {"label": 1, "prediction": 0, "fusion_prediction": 1, "type": "color"},
               {"label": -1, "prediction": 0, "fusion_prediction": 0, "type": "shape"}]
    metrics = zero_shot_metrics(records, "demo_qa_test", 2)
    assert metrics == pytest.approx({
        "demo_qa_test/qa/zs_acc@2clips": 100 / 3, "demo_qa_test/qa/zs_acc_color@2clips": 50.0,
        "demo_qa_test/qa/zs_acc_shape@2clips": 0.0, "demo_qa_test/qa/zs_fusion_acc@2clips": 100 / 3,
        "demo_qa_test/qa/zs_fusion_acc_color@2clips": 50.0, "demo_qa_test/qa/zs_fusion_acc_shape@2clips": 0.0,
        "demo_qa_test/qa/num_questions": 3.0})
    untyped = [{k: v for k, v in r.items() if k != "fusion_prediction"} | {"type": None} for r in records]
    assert set(zero_shot_metrics(untyped, "s", None)) == {"s/qa/zs_acc", "s/qa/num_questions"}


def test_qa_zero_shot_templates() -> None:
    assert resolve_template("question-answer") == "{question} {answer}"
    assert resolve_template("answer") == "{answer}"
    assert resolve_template("Q: {question} A: {answer}") == "Q: {question} A: {answer}"
    for bad in ("{question}", "{answer} {colour}", "question answer"):
        with pytest.raises(ValueError, match="QA template"):
            resolve_template(bad)


# --- a hand-built model whose answer ranking is known ---------------------------------------------
class ColourModel(nn.Module):
    """Statements are the colour words they hold; a clip is the colour its frame pixel holds. The dual
    encoder thus prefers the video's colour; the fusion scorer is built to prefer any other colour."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.colour_ids = torch.tensor(tokenizer.convert_tokens_to_ids(COLOURS))
        self.bert = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=32))
        self.encoded: list[int] = []  # texts per encode_text call

    def temperature(self) -> float:
        return 0.05

    def colours(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ((ids[..., None] == self.colour_ids) & mask.bool()[..., None]).sum(dim=1).float()

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> SimpleNamespace:
        self.encoded.append(len(ids))
        return SimpleNamespace(global_feature=F.normalize(self.colours(ids, mask), dim=-1))

    def encode_video(self, frames: torch.Tensor, clip_mask: torch.Tensor) -> SimpleNamespace:
        clips = F.normalize(frames[:, :, :3, 0, 0], dim=-1)
        return SimpleNamespace(tokens=clips, clip_features=clips, clip_mask=clip_mask)

    def fuse(self, ids, mask, clip_tokens, clip_mask) -> SimpleNamespace:
        agreement = (self.colours(ids, mask) * (clip_tokens * clip_mask[..., None]).sum(dim=1)).sum(dim=-1)
        return SimpleNamespace(pooled=-agreement[:, None])

    def match_score(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled.squeeze(-1)


def colour_batch(tokenizer, videos: dict[str, list[list[float]]], questions: list[tuple[int, str, int]],
                 padding: tuple[tuple[int, int], ...] = ()) -> VideoTextBatch:
    """videos: key -> one RGB per clip; questions: (video, text, label); padding: (video, clip) not real."""
    rgb = torch.tensor(list(videos.values()), dtype=torch.float)  # [B, T, 3]
    clip_mask = torch.ones(rgb.shape[:2], dtype=torch.bool)
    for video, clip in padding:
        clip_mask[video, clip] = False
    ids, mask = tokenize(tokenizer, [q for _, q, _ in questions], 16)
    return VideoTextBatch(keys=list(videos), frames=rgb[..., None, None], clip_mask=clip_mask, text_ids=ids,
                          text_mask=mask, text_video_index=torch.tensor([v for v, _, _ in questions]),
                          mlm_ids=ids, mlm_labels=torch.full_like(ids, -100),
                          text_labels=torch.tensor([label for _, _, label in questions]))


def colour_batches(tokenizer) -> list[VideoTextBatch]:
    """v2 is red and green at once (a tie); v3's second clip is red but padding: counted, it would make
    red tie with blue. The second batch holds the videos that sort first."""
    ask = "what colour is it?"
    first = colour_batch(tokenizer, {"v2": [[1, 1, 0], [1, 1, 0]], "v3": [[0, 0, 1], [1, 0, 0]]},
                         [(0, ask, 0), (1, ask, 2)], padding=((1, 1),))
    second = colour_batch(tokenizer, {"v0": [[1, 0, 0], [1, 0, 0]], "v1": [[0, 1, 0], [0, 1, 0]]},
                          [(0, ask, 0), (0, "what colour is the circle?", -1), (1, ask, 1)])
    return [first, second]


def test_qa_zero_shot_known_ranking_dual_and_fusion(tokenizer) -> None:
    model = ColourModel(tokenizer)
    options = ZeroShotOptions(fusion=True, question_type=lambda video, order: f"q{order}", chunk=4)
    result = evaluate_qa_zero_shot(model, colour_batches(tokenizer), COLOURS, "demo", 2, tokenizer, options=options)
    rows = [(r["video"], r["order"], r["answer"], r["predicted"], r["correct"]) for r in result.records]
    assert rows == [("v0", 0, "red", "red", True), ("v0", 1, None, "red", False), ("v1", 0, "green", "green", True),
                    ("v2", 0, "red", "green", False), ("v3", 0, "blue", "blue", True)]
    assert result.records[1]["question"] == "what colour is the circle?" and result.records[1]["type"] == "q1"
    assert result.metrics["demo/qa/zs_acc@2clips"] == pytest.approx(60.0)
    assert result.metrics["demo/qa/zs_acc_q0@2clips"] == pytest.approx(75.0)
    assert result.metrics["demo/qa/zs_acc_q1@2clips"] == 0.0
    assert result.metrics["demo/qa/zs_fusion_acc@2clips"] == 0.0  # the fusion scorer prefers wrong colours
    assert not any(r["fusion_correct"] for r in result.records)
    assert result.metrics["demo/qa/num_questions"] == 5
    assert sum(model.encoded) == 2 * 3 and max(model.encoded) <= 4  # 2 distinct questions x 3 answers, chunked
    model.encoded.clear()
    answer_only = evaluate_qa_zero_shot(model, colour_batches(tokenizer), COLOURS, "demo", 2, tokenizer,
                                        options=ZeroShotOptions(template="answer"))
    assert model.encoded == [3]  # one set of statements shared by every question
    assert answer_only.metrics["demo/qa/zs_acc@2clips"] == pytest.approx(60.0)


def test_qa_zero_shot_two_ranks_give_the_records_of_one(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ColourModel(tokenizer)
    first, second = colour_batches(tokenizer)
    single = evaluate_qa_zero_shot(model, [first, second], COLOURS, "demo", 2, tokenizer)
    statements = Statements(model, tokenizer, COLOURS)
    rank1 = score_questions(model, [second], statements, 0.05)  # what rank 1 would have read and scored
    monkeypatch.setattr(qa_zero_shot, "gather_objects", lambda local, world_size: [local, rank1])
    rank0 = evaluate_qa_zero_shot(model, [first], COLOURS, "demo", 2, tokenizer, EvalContext(rank=0, world_size=2))
    assert rank0.records == single.records and rank0.metrics == single.metrics


# --- through the launch script on the tiny corpus ---------------------------------------------------
def _launch(corpus: Path, out: Path, *args: str) -> dict:
    evaluate.main(["--config", str(TINY_RECIPE), *args, "--out", str(out), *tiny_overrides(corpus)])
    return json.loads(out.read_text())


def test_qa_zero_shot_smoke_through_evaluate(tiny_corpus: Path, tiny_config: RunConfig, tokenizer, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    make_demo_tasks(tiny_corpus, seed=0, out=tmp_path / "tasks")
    qa_file = tmp_path / "tasks" / "qa_test.json"
    annotation = load_annotation(qa_file)
    untrained = _launch(tiny_corpus, tmp_path / "untrained.json", "--annotation", str(qa_file), "--qa-zero-shot",
                        "--qa-fusion")
    assert "QA protocol: zero-shot answer matching" in capsys.readouterr().out
    metrics, split = untrained["metrics"], annotation.split
    assert untrained["qa_protocol"] == "zero-shot" and metrics[f"{split}/qa/num_questions"] == len(annotation.items)
    types = {item["type"] for item in annotation.items}
    wanted = [f"{split}/qa/{name}@2clips" for name in ["zs_acc", "zs_fusion_acc", *(f"zs_acc_{t}" for t in types)]]
    assert all(0 <= metrics[key] <= 100 for key in wanted), sorted(metrics)
    assert [r["question"] for r in untrained["records"]] == [i["question"] for i in annotation.items]

    torch.manual_seed(tiny_config.train.seed)  # the same weights as the untrained run, saved without a QA head
    model = build_model(tiny_config.model, tokenizer)
    save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    headless = _launch(tiny_corpus, tmp_path / "headless.json", "--annotation", str(qa_file), "--checkpoint",
                       str(tmp_path / "bare.safetensors"))
    assert headless["qa_protocol"] == "zero-shot"  # no `head.*` weights: answer matching, not a refusal
    assert headless["records"] == [{k: v for k, v in r.items() if not k.startswith("fusion_")}
                                   for r in untrained["records"]]
