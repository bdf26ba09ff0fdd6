"""Frame transforms: uint8 [T, H, W, 3] -> normalised float [T, 3, S, S], the same crop for every frame.

Torch ops only, so the same code can run on GPU tensors (the DALI path does this inside its pipeline).
The crop is cut from the decoded frames first and only the crop is resized, on uint8 (torch's fast
antialiased path); the result equals resize-then-crop up to sub-pixel rounding and costs a fraction of it,
which matters because the transform runs for every clip in the loader workers.
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
    size, centre crop. One crop per clip so motion between frames is preserved.

    `__call__` gives normalised float frames; `geometry` stops before the float conversion (uint8), so the
    collator can convert and normalise straight into the batch tensor (one pass instead of four copies).
    """

    def __init__(self, size: int, train: bool, scale: tuple[float, float] = (1.0, 1.25), hflip: bool = True):
        self.size, self.train, self.scale, self.hflip = size, train, scale, hflip

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: random.Random) -> torch.Tensor:
        return normalize(self.geometry(frames, rng).contiguous().float())

    def geometry(self, frames: np.ndarray | torch.Tensor, rng: random.Random) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> uint8 [T, 3, S, S] (crop, resize, flip; any memory layout)."""
        video = torch.as_tensor(frames).permute(0, 3, 1, 2)  # [T, 3, H, W], still uint8
        short = self.size * (rng.uniform(*self.scale) if self.train else 1.0)
        video = self._crop(video, max(self.size, round(short)), rng)
        video = _resize(video, self.size)
        if self.train and self.hflip and rng.random() < 0.5:
            video = video.flip(-1)
        return video

    def _crop(self, video: torch.Tensor, short: int, rng: random.Random) -> torch.Tensor:
        """The region that becomes the size x size crop once the short side is resized to `short`."""
        height, width = video.shape[-2:]
        side = min(height, width, max(1, round(self.size * min(height, width) / short)))
        if self.train:
            top, left = rng.randint(0, height - side), rng.randint(0, width - side)
        else:
            top, left = (height - side) // 2, (width - side) // 2
        return video[..., top:top + side, left:left + side]


def _resize(video: torch.Tensor, size: int) -> torch.Tensor:
    if video.shape[-2:] == (size, size):
        return video
    shrink = video.shape[-1] > size
    if video.is_cuda:
        video = video.float()  # uint8 interpolation is a CPU fast path
    elif video.dtype == torch.uint8:
        video = video.contiguous(memory_format=torch.channels_last)  # the layout of torch's uint8 fast path
    return F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


_NORM: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(video: torch.Tensor) -> torch.Tensor:
    """In place: float frames [..., 3, H, W] with values 0..255 -> ImageNet-normalised.
    (x / 255 - mean) / std as one multiply and one subtract: 10x cheaper than the literal form, and 2.7x
    cheaper than torch.addcmul with the same broadcast factors (measured on one CPU core)."""
    if video.device not in _NORM:
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        _NORM[video.device] = ((1.0 / (255.0 * std)).to(video.device), (mean / std).to(video.device))
    scale, shift = _NORM[video.device]
    return video.mul_(scale).sub_(shift)
