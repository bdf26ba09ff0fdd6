"""Per-video and per-text evaluation features: extracted on each rank, gathered, put in one fixed order.

Each rank reads a disjoint part of the held-out stream (build_eval_loader splits it once across ranks), so
every rank extracts its part, all parts are gathered to every rank, and the union is sorted by video key
(texts by their video, then in the order the video carries them). The order is therefore the same for 1 or
N ranks, and so are the metrics.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
from torch import nn

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.distributed import gather_objects
from snps3_ds.evaluation.context import EvalContext
from snps3_ds.models.snp import SNPModel


GroundTruth = Literal["string", "instance"]
"""Which videos a caption's query counts as right (DESIGN §4.4, README "Ground truth"):

  string    every video that has this caption string (token-identical after tokenisation), the reference's
            protocol (one text id per caption string, REFERENCE §4.1): on MSVD a caption such as "a man is
            playing a guitar" that occurs for several videos has all of them as ground truth. The default.
  instance  only the video the caption instance belongs to (CLIP4Clip and most follow-ups).

Query rows stay one per caption instance in both; only the ground truth differs.
"""
GROUND_TRUTHS = ("string", "instance")


@dataclass
class EvalFeatures:
    """B videos and N texts on the CPU, fp32 features (T clips, D feature size, H hidden, L text length).

      keys           list[str] [B], sorted after gathering
      clip_features  [B, T, D] L2-normalised contrastive clip features (the dual encoder's video side)
      clip_tokens    [B, T*S, H] clip tokens fed to the fusion pass (S per clip), or None when not kept
      clip_mask      bool [B, T]
      text_features  [N, D] L2-normalised global text features
      text_ids       long [N, L] and text_mask long [N, L]: what the fusion pass re-reads
      text_video     long [N] index of each text's video in `keys`
      text_order     long [N] position of the text among its video's texts (annotation order)
      text_labels    long [N] or None, the batches' text_labels (QA answer ids, MC right/wrong)
    """

    keys: list[str]
    clip_features: torch.Tensor
    clip_tokens: torch.Tensor | None
    clip_mask: torch.Tensor
    text_features: torch.Tensor
    text_ids: torch.Tensor
    text_mask: torch.Tensor
    text_video: torch.Tensor
    text_order: torch.Tensor
    text_labels: torch.Tensor | None = None

    @property
    def num_videos(self) -> int:
        return len(self.keys)

    @property
    def num_texts(self) -> int:
        return self.text_features.shape[0]

    def truth(self, ground_truth: GroundTruth = "string") -> torch.Tensor:
        """bool [N, B]: text n counts as describing video b (see GroundTruth)."""
        out = torch.zeros(self.num_texts, self.num_videos, dtype=torch.bool)
        if ground_truth == "instance":
            out[torch.arange(self.num_texts), self.text_video] = True
            return out
        if ground_truth != "string":
            raise ValueError(f"ground truth: expected one of {GROUND_TRUTHS}, got {ground_truth!r}")
        _, caption = torch.unique(self.text_ids * self.text_mask, dim=0, return_inverse=True)
        videos_of = torch.zeros(int(caption.max()) + 1 if self.num_texts else 0, self.num_videos, dtype=torch.bool)
        videos_of[caption, self.text_video] = True
        return videos_of[caption]


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Dropout off, BatchNorm on running statistics, no autograd; the previous mode restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def labelled_batches(batches: Iterable[VideoTextBatch], ctx: EvalContext, protocol: str) -> Iterator[VideoTextBatch]:
    """Downstream batches on the device; each must carry text_labels (answer ids, or 1/0 per option),
    which only an annotation-joined loader provides."""
    for batch in batches:
        if batch.text_labels is None:
            raise ValueError(f"{protocol} needs batch.text_labels: build the eval loader with "
                             "texts=task_texts(<annotation>, train=False)")
        yield batch.to(ctx.device, frames_dtype=ctx.frames_dtype)


def text_order(text_video_index: torch.Tensor) -> torch.Tensor:
    """Position of each text among the texts of the same video, counting in batch order."""
    seen: dict[int, int] = {}
    order = []
    for owner in text_video_index.tolist():
        order.append(seen.get(owner, 0))
        seen[owner] = order[-1] + 1
    return torch.tensor(order, dtype=torch.long)


def batch_features(model: SNPModel, batch: VideoTextBatch, keep_tokens: bool) -> EvalFeatures:
    """Features of one batch (already on the model's device), moved to the CPU in fp32."""
    video = model.encode_video(batch.frames, batch.clip_mask)
    text = model.encode_text(batch.text_ids, batch.text_mask)
    labels = batch.text_labels
    return EvalFeatures(
        keys=list(batch.keys), clip_features=video.clip_features.float().cpu(),
        clip_tokens=video.tokens.float().cpu() if keep_tokens else None, clip_mask=batch.clip_mask.bool().cpu(),
        text_features=text.global_feature.float().cpu(), text_ids=batch.text_ids.cpu(),
        text_mask=batch.text_mask.cpu(), text_video=batch.text_video_index.long().cpu(),
        text_order=text_order(batch.text_video_index.cpu()), text_labels=None if labels is None else labels.cpu())


def extract_features(model: SNPModel, batches: Iterable[VideoTextBatch], ctx: EvalContext,
                     keep_tokens: bool = True) -> EvalFeatures | None:
    """This rank's features in stream order (None when its part of the stream is empty)."""
    parts = []
    with eval_mode(model):
        for batch in batches:
            parts.append(batch_features(model, batch.to(ctx.device, frames_dtype=ctx.frames_dtype), keep_tokens))
    return concat_features(parts) if parts else None


def concat_features(parts: list[EvalFeatures]) -> EvalFeatures:
    """Parts one after another; text_video re-based onto the concatenated videos."""
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + part.num_videos)
    values = {}
    for f in fields(EvalFeatures):
        items = [getattr(p, f.name) for p in parts]
        if f.name == "keys":
            values[f.name] = [k for keys in items for k in keys]
        elif f.name == "text_video":
            values[f.name] = torch.cat([v + o for v, o in zip(items, offsets)])
        elif any(v is None for v in items):
            values[f.name] = None
        else:
            values[f.name] = torch.cat(items)
    return EvalFeatures(**values)


def sort_by_key(feats: EvalFeatures) -> EvalFeatures:
    """Videos by key, texts by (video, text_order): the same order whichever rank read what."""
    duplicates = sorted(k for k, n in Counter(feats.keys).items() if n > 1)
    if duplicates:
        raise ValueError(f"evaluation shards hold video key(s) {duplicates[:5]} more than once; each video must "
                         "appear once (check data.eval_shards for overlapping shard lists)")
    video_order = sorted(range(feats.num_videos), key=feats.keys.__getitem__)
    new_index = torch.empty(feats.num_videos, dtype=torch.long)
    new_index[torch.tensor(video_order, dtype=torch.long)] = torch.arange(feats.num_videos)
    text_video = new_index[feats.text_video]
    text_rank = text_video * (int(feats.text_order.max()) + 1 if feats.num_texts else 1) + feats.text_order
    texts = torch.argsort(text_rank, stable=True)
    videos = torch.tensor(video_order, dtype=torch.long)

    def pick(value: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
        return None if value is None else value[index]

    return replace(feats, keys=[feats.keys[i] for i in video_order], clip_features=feats.clip_features[videos],
                   clip_tokens=pick(feats.clip_tokens, videos), clip_mask=feats.clip_mask[videos],
                   text_features=feats.text_features[texts], text_ids=feats.text_ids[texts],
                   text_mask=feats.text_mask[texts], text_video=text_video[texts], text_order=feats.text_order[texts],
                   text_labels=pick(feats.text_labels, texts))


def gather_features(local: EvalFeatures | None, world_size: int) -> EvalFeatures:
    """Every rank's features on every rank, sorted by key."""
    parts = [p for p in gather_objects(local, world_size) if p is not None]
    if not parts:
        raise ValueError("the evaluation stream yielded no samples (check data.eval_shards and, with an "
                         "annotation, that its video keys match the shards' __key__s)")
    return sort_by_key(concat_features(parts))


def collect_features(model: SNPModel, batches: Iterable[VideoTextBatch], ctx: EvalContext,
                     keep_tokens: bool = True) -> EvalFeatures:
    """extract_features on this rank's part of the stream, then gather_features."""
    return gather_features(extract_features(model, batches, ctx, keep_tokens), ctx.world_size)
