"""Zero-shot open-ended QA by answer matching: every answer of the vocabulary scored as a statement.

A pre-trained retrieval model has no answer classifier, so the classifier accuracy (qa.py) is undefined
for it. This protocol fills a template with the question and each answer ("what colour is the square?
red"), scores every statement against the question's video with the dual-encoder similarity the model is
trained with (text_video_scores: logsumexp over clips of cos / T, as retrieval scores) and, optionally,
with the fusion scorer (match_score), and answers with the best statement. Ties are counted against the
model (pick_answers) and answers outside the vocabulary (label -1) are always wrong, as in qa.py.

The text side does not depend on the video, so the statements of a question are encoded once and kept
(a bounded cache keyed by the question: many questions repeat, and with the answer-only template all of
them share one set). Statements are not cut at data.max_text_len: the answer comes last and would be the
part cut off. Each rank scores the questions of its part of the stream; the per-question records are
gathered and sorted by (video key, question order), so 1 and N ranks report the same figures.
"""

from __future__ import annotations

import string
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.text.tokens import tokenize
from snps3_ds.distributed import gather_objects
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.evaluation.features import eval_mode, labelled_batches, text_order
from snps3_ds.evaluation.metrics import metric_key, qa_accuracy
from snps3_ds.evaluation.qa import QAResult, QuestionType
from snps3_ds.models.snp import SNPModel
from snps3_ds.objectives.contrastive import text_video_scores
from snps3_ds.ranking import require_finite

TEMPLATES = {"question-answer": "{question} {answer}", "answer": "{answer}"}
DEFAULT_TEMPLATE = TEMPLATES["question-answer"]

QuestionOf = Callable[[str, int], str]
"""(video key, question order within the video) -> the question text (e.g. TaskTexts.texts_of)."""


@dataclass(frozen=True)
class ZeroShotOptions:
    """How answers are matched: the statement template, whether the fusion scorer also votes, where
    question texts and types come from, the temperature (default: the model's) and the text chunk size."""

    template: str = DEFAULT_TEMPLATE
    fusion: bool = False
    question_type: QuestionType | None = None
    question_of: QuestionOf | None = None
    temperature: float | None = None
    chunk: int = 512


def resolve_template(spec: str) -> str:
    """A named template (TEMPLATES) or a format string with `{answer}` and optionally `{question}`."""
    template = TEMPLATES.get(spec, spec)
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if "answer" not in fields or not fields <= {"question", "answer"}:
        raise ValueError(f"QA template {spec!r}: expected one of {sorted(TEMPLATES)} or a format string with "
                         "{answer} and optionally {question}, e.g. '{question} {answer}'")
    return template


def pick_answers(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The best answer per question [Q] from scores [Q, A]; ties are counted against the model: when the
    right answer shares the best score with another, the other is picked (so a constant scorer gets 0)."""
    require_finite(scores, "zero-shot QA answer scores")
    top = scores.float() >= scores.float().max(dim=1, keepdim=True).values
    rows = torch.arange(len(labels))
    known = labels >= 0
    right_on_top = torch.zeros_like(known)
    right_on_top[known] = top[rows[known], labels[known]]
    shared = right_on_top & (top.sum(dim=1) > 1)
    top[rows[shared], labels[shared]] = False
    return top.int().argmax(dim=1)  # the first remaining best answer


class Statements:
    """The vocabulary's statements for a question: texts, and global text features [A, D] (CPU, fp32)
    encoded in chunks of `chunk` texts and cached for up to `max_cached` statements."""

    def __init__(self, model: SNPModel, tokenizer, answers: list[str], template: str = DEFAULT_TEMPLATE,
                 device: torch.device | str = "cpu", chunk: int = 512, max_cached: int = 1 << 20) -> None:
        self.model, self.tokenizer, self.answers, self.device = model, tokenizer, answers, device
        self.template, self.chunk, self.max_cached = resolve_template(template), chunk, max_cached
        self.max_len = model.bert.config.max_position_embeddings
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def key(self, question: str) -> str:
        return question if "{question}" in self.template else ""  # answer-only: one set for every question

    def texts(self, question: str) -> list[str]:
        return [self.template.format(question=question, answer=answer) for answer in self.answers]

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids and mask on the device, without the padding columns no text of `texts` uses."""
        ids, mask = tokenize(self.tokenizer, texts, self.max_len)
        length = max(1, int(mask.sum(dim=1).max()))
        return ids[:, :length].to(self.device), mask[:, :length].to(self.device)

    def features(self, questions: list[str]) -> list[torch.Tensor]:
        """[A, D] per question (call inside eval_mode)."""
        missing = list(dict.fromkeys(self.key(q) for q in questions if self.key(q) not in self.cache))
        texts = [t for q in missing for t in self.texts(q)]
        parts = [self.model.encode_text(*self.tokens(texts[i:i + self.chunk])).global_feature.float().cpu()
                 for i in range(0, len(texts), self.chunk)]
        found = {k: self.cache[k] for k in dict.fromkeys(self.key(q) for q in questions) if k in self.cache}
        if parts:
            found.update(zip(missing, torch.cat(parts).view(len(missing), len(self.answers), -1)))
        for k in missing:
            self.cache[k] = found[k]
        while len(self.cache) > 1 and len(self.cache) * len(self.answers) > self.max_cached:
            self.cache.popitem(last=False)
        return [found[self.key(q)] for q in questions]


def dual_answer_scores(features: list[torch.Tensor], clips: torch.Tensor, clip_mask: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """[N, A]: question n's statements [A, D] against its video's clips clips[n] [T, D], scored as in
    retrieval and training (text_video_scores)."""
    return torch.stack([text_video_scores(f, clips[n:n + 1], clip_mask[n:n + 1], temperature)[:, 0]
                        for n, f in enumerate(features)])


def fusion_answer_scores(model: SNPModel, statements: Statements, questions: list[str], clip_tokens: torch.Tensor,
                         clip_mask: torch.Tensor) -> torch.Tensor:
    """[N, A]: the fusion matching logit of each statement with its question's video (clip_tokens [N, T, H]
    on the device), in passes of statements.chunk pairs."""
    texts = [t for q in questions for t in statements.texts(q)]
    owners = torch.arange(len(questions), device=clip_tokens.device).repeat_interleave(len(statements.answers))
    scores = []
    for start in range(0, len(texts), statements.chunk):
        ids, mask = statements.tokens(texts[start:start + statements.chunk])
        index = owners[start:start + statements.chunk]
        fused = model.fuse(ids, mask, clip_tokens[index], clip_mask[index])
        scores.append(model.match_score(fused.pooled).float().cpu())
    return torch.cat(scores).view(len(questions), len(statements.answers))


def batch_questions(batch: VideoTextBatch, statements: Statements, question_of: QuestionOf | None
                    ) -> tuple[list[str], list[int], list[str]]:
    """(video key, order, question text) of each text of the batch; without `question_of` the text is
    decoded from its token ids (lower-cased and cut at data.max_text_len by the loader)."""
    owners = batch.text_video_index.cpu()
    videos = [batch.keys[o] for o in owners.tolist()]
    orders = text_order(owners).tolist()
    if question_of is not None:
        return videos, orders, [question_of(v, o) for v, o in zip(videos, orders)]
    ids, mask = batch.text_ids.cpu(), batch.text_mask.cpu().bool()
    texts = [statements.tokenizer.decode(ids[n][mask[n]].tolist(), skip_special_tokens=True) for n in range(len(ids))]
    return videos, orders, texts


def score_questions(model: SNPModel, batches: Iterable[VideoTextBatch], statements: Statements,
                    temperature: float, options: ZeroShotOptions = ZeroShotOptions(),
                    ctx: EvalContext = EvalContext()) -> list[dict]:
    """This rank's questions, one record each (answer strings and types are added after gathering)."""
    records = []
    with eval_mode(model):
        for batch in labelled_batches(batches, ctx, "zero-shot QA"):
            if batch.num_texts == 0:
                continue
            videos, orders, questions = batch_questions(batch, statements, options.question_of)
            video = model.encode_video(batch.frames, batch.clip_mask)
            owners = batch.text_video_index
            labels = batch.text_labels.cpu()
            dual = dual_answer_scores(statements.features(questions), video.clip_features[owners].float().cpu(),
                                      batch.clip_mask[owners].cpu(), temperature)
            picks = {"prediction": pick_answers(dual, labels).tolist()}
            if options.fusion:
                scores = fusion_answer_scores(model, statements, questions, video.tokens[owners],
                                              batch.clip_mask[owners])
                picks["fusion_prediction"] = pick_answers(scores, labels).tolist()
            for n, label in enumerate(labels.tolist()):
                records.append({"video": videos[n], "order": orders[n], "question": questions[n], "label": label,
                                **{name: values[n] for name, values in picks.items()}})
    return records


def describe(records: list[dict], answers: list[str], question_type: QuestionType | None) -> list[dict]:
    """Each record with its answer strings (answer None when outside the vocabulary), correct flags and
    question type (None without question_type)."""
    for r in records:
        r["answer"] = answers[r["label"]] if r["label"] >= 0 else None
        r["type"] = question_type(r["video"], r["order"]) if question_type else None
        for prefix in ("", "fusion_"):
            if f"{prefix}prediction" in r:
                r[f"{prefix}predicted"] = answers[r[f"{prefix}prediction"]]
                r[f"{prefix}correct"] = r[f"{prefix}prediction"] == r["label"] and r["label"] >= 0
    return records


def zero_shot_metrics(records: list[dict], split: str, num_clips: int | None) -> dict[str, float]:
    """`<split>/qa/zs_acc@<clips>clips`, `zs_acc_<type>` per question type (records with a type), the same
    under `zs_fusion_` when the records carry fusion predictions, and `<split>/qa/num_questions`."""
    labels = torch.tensor([r["label"] for r in records])
    types = [str(r["type"]) for r in records] if records and records[0].get("type") is not None else None
    metrics = {}
    for variant, field in (("zs", "prediction"), ("zs_fusion", "fusion_prediction")):
        if records and field in records[0]:
            accuracy = qa_accuracy(torch.tensor([r[field] for r in records]), labels, types)
            metrics.update({metric_key(split, f"qa/{variant}_{k}", num_clips): v for k, v in accuracy.items()})
    metrics[metric_key(split, "qa/num_questions")] = float(len(records))
    return metrics


def evaluate_qa_zero_shot(model: SNPModel, batches: Iterable[VideoTextBatch], answers: list[str], split: str,
                          num_clips: int | None, tokenizer, ctx: EvalContext = EvalContext(),
                          options: ZeroShotOptions = ZeroShotOptions()) -> QAResult:
    """Zero-shot accuracy of a retrieval model (see the module doc); `tokenizer` is the model's. Call on every
    rank (the records are gathered); every rank gets the same result. Records per question: video, order,
    question, label, answer, prediction, predicted, correct, type (+ fusion_prediction, fusion_predicted,
    fusion_correct with options.fusion)."""
    temperature = float(model.temperature()) if options.temperature is None else options.temperature
    statements = Statements(model, tokenizer, answers, options.template, ctx.device, options.chunk)
    local = score_questions(model, batches, statements, temperature, options, ctx)
    records = sorted((r for part in gather_objects(local, ctx.world_size) for r in part),
                     key=lambda r: (r["video"], r["order"]))
    if not records:
        raise ValueError(f"QA split {split!r}: the evaluation stream yielded no question (do the annotation's "
                         "video keys match the shards' __key__s?)")
    records = describe(records, answers, options.question_type)
    return QAResult(zero_shot_metrics(records, split, num_clips), records)
