"""Export of the dual-encoder embeddings of an evaluation split, for search outside this codebase.

DIR/embeddings.safetensors holds (fp32):
  text         [N, D]     L2-normalised global text features (the text pass's pooled [CLS])
  video        [B, D]     one vector per video: the L2-normalised mean of its real clips' features
  video_clips  [B, T, D]  the L2-normalised clip features themselves
  clip_mask    [B, T]     1 for real clips
  text_video   [N]        index of each text's video
DIR/keys.json holds {"videos": [key, ...], "texts": [{"text", "video", "order"}, ...], "temperature", "similarity"}.

The evaluation's own similarity is logsumexp over a video's clips of cos(text, clip) / T (what the model
was trained with); it needs every clip. `video` is the single-vector approximation that ordinary vector
search indexes take (cos(text, mean clip) ranks close to it); `video_clips` allows the exact score.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from snps3_ds.evaluation.features import EvalFeatures

SIMILARITY = "logsumexp_t(cos(text, video_clips[t]) / temperature) over real clips; `video` = normalised clip mean"


def mean_video_embedding(clips: torch.Tensor, clip_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, D] -> [B, D]: the mean of the real clips, L2-normalised."""
    weights = clip_mask.float().unsqueeze(-1)
    return F.normalize((clips.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1), dim=-1)


def export_embeddings(feats: EvalFeatures, out_dir: str | Path, temperature: float,
                      text_of: Callable[[EvalFeatures, int], str] | None = None) -> Path:
    """Write the two files; returns the folder. Call on one rank only."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {"text": feats.text_features.float().contiguous(),
               "video": mean_video_embedding(feats.clip_features, feats.clip_mask).contiguous(),
               "video_clips": feats.clip_features.float().contiguous(),
               "clip_mask": feats.clip_mask.to(torch.uint8).contiguous(),
               "text_video": feats.text_video.long().contiguous()}
    save_file(tensors, str(out / "embeddings.safetensors"))
    texts = []
    for i in range(feats.num_texts):
        video = feats.keys[int(feats.text_video[i])]
        order = int(feats.text_order[i])
        texts.append({"text": text_of(feats, i) if text_of else f"{video}#{order}", "video": video, "order": order})
    index = {"videos": feats.keys, "texts": texts, "temperature": float(temperature), "similarity": SIMILARITY}
    (out / "keys.json").write_text(json.dumps(index, ensure_ascii=False, indent=1))
    return out


def load_embeddings(out_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, keys.json) as written by export_embeddings."""
    out = Path(out_dir)
    tensor_file, keys_file = out / "embeddings.safetensors", out / "keys.json"
    for path in (tensor_file, keys_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; expected a folder written by --export-embeddings")
    return load_file(str(tensor_file)), json.loads(keys_file.read_text())
