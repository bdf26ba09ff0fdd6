"""Visual backbones behind one interface: frames [B, T, 3, H, W] -> grid [B, T, C, h, w].

C is the text hidden size: a 1x1 projection follows backbones whose channels differ. Weights load from
local files only; timm is asked for random init and never reaches a hub.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


class VisualEncoder(nn.Module):
    """A timm 2D backbone run on every frame, its last feature map projected to out_dim channels."""

    def __init__(self, backbone: str, out_dim: int, checkpoint: str | None = None) -> None:
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="")
        if checkpoint:
            load_backbone_weights(self.backbone, checkpoint)
        channels = self.backbone.num_features
        self.proj = nn.Conv2d(channels, out_dim, kernel_size=1) if channels != out_dim else nn.Identity()
        self.out_dim = out_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, clips = frames.shape[:2]
        grid = self.backbone.forward_features(frames.flatten(0, 1))
        if grid.ndim != 4:
            raise ValueError(f"backbone {type(self.backbone).__name__} gives features of shape {tuple(grid.shape)}; "
                             "VisualEncoder needs a [N, C, h, w] feature map")
        grid = self.proj(grid)
        return grid.unflatten(0, (batch, clips))


def load_backbone_weights(module: nn.Module, path: str) -> None:
    """Load a local timm/torchvision state dict (.pth, .pt or .safetensors); mismatches are an error naming keys."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"model.visual_checkpoint: no file at {file} (weights are never downloaded)")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    head = {k for k in state if k.startswith(("fc.", "head.", "classifier."))}  # classifier heads are dropped
    result = module.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{file}: does not fit backbone {type(module).__name__}; "
                         f"missing keys {result.missing_keys[:10]}, unexpected keys {result.unexpected_keys[:10]}")
