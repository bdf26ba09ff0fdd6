"""Zero-shot / dual-encoder text-video retrieval over a held-out stream of VideoTextBatches."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.evaluation.metrics import text_video_metrics
from snps3_ds.models.snp import SNPModel
from snps3_ds.objectives.contrastive import text_video_scores


@torch.no_grad()
def evaluate_retrieval(model: SNPModel, batches: Iterable[VideoTextBatch], temperature: float,
                       device: torch.device | str = "cpu") -> dict[str, float]:
    """Text->video and video->text R@1/5/10, MdR, MnR with every caption a query (a hit: its video)."""
    model.eval()
    texts, clips, masks, owners = [], [], [], []
    videos = 0
    for batch in batches:
        batch = batch.to(device)
        video = model.encode_video(batch.frames, batch.clip_mask)
        texts.append(model.encode_text(batch.text_ids, batch.text_mask).global_feature.cpu())
        clips.append(video.clip_features.cpu())
        masks.append(batch.clip_mask.cpu())
        owners.append(batch.text_video_index.cpu() + videos)
        videos += batch.num_videos
    if not videos:
        raise ValueError("the evaluation stream yielded no samples")
    scores = text_video_scores(torch.cat(texts), torch.cat(clips), torch.cat(masks), temperature)
    metrics = text_video_metrics(scores, torch.cat(owners))
    return {**metrics, "num_videos": float(videos), "num_texts": float(scores.shape[0])}
