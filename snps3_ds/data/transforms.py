"""Frame transforms: uint8 [T, H, W, 3] -> normalised float [T, 3, S, S], the same crop for every frame.

Torch ops only, so the same code can run on GPU tensors (the DALI path does this inside its pipeline).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrameTransform:
    """Training: short side to size * U(scale), random crop, optional flip. Evaluation: short side to
    size, centre crop. One crop per clip so motion between frames is preserved."""

    def __init__(self, size: int, train: bool, scale: tuple[float, float] = (1.0, 1.25), hflip: bool = True):
        self.size, self.train, self.scale, self.hflip = size, train, scale, hflip
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: random.Random) -> torch.Tensor:
        video = torch.as_tensor(frames).permute(0, 3, 1, 2).float().div_(255.0)  # [T, 3, H, W]
        short = self.size * (rng.uniform(*self.scale) if self.train else 1.0)
        video = _resize_short_side(video, max(self.size, round(short)))
        video = self._crop(video, rng)
        if self.train and self.hflip and rng.random() < 0.5:
            video = video.flip(-1)
        return (video - self.mean) / self.std

    def _crop(self, video: torch.Tensor, rng: random.Random) -> torch.Tensor:
        height, width = video.shape[-2:]
        if self.train:
            top, left = rng.randint(0, height - self.size), rng.randint(0, width - self.size)
        else:
            top, left = (height - self.size) // 2, (width - self.size) // 2
        return video[..., top:top + self.size, left:left + self.size]


def _resize_short_side(video: torch.Tensor, short: int) -> torch.Tensor:
    height, width = video.shape[-2:]
    ratio = short / min(height, width)
    new_size = (max(short, round(height * ratio)), max(short, round(width * ratio)))
    if new_size == (height, width):
        return video
    return F.interpolate(video, size=new_size, mode="bilinear", align_corners=False, antialias=ratio < 1)
