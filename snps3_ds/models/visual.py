"""Visual backbones behind one interface: frames [B, T, 3, H, W] -> grid [B, T, C, h, w].

C is the text hidden size: a 1x1 projection follows backbones whose channels differ. Two kinds:

* `timm`: a 2D image model run on every frame (ResNet-50, PVTv2-B2, their tiny relatives, or any timm
  model whose `forward_features` gives an [N, C, h, w] map);
* `swin3d`: torchvision's Video Swin, all T frames of a video jointly as one 3D sequence.

Weights load from local files only (`load_backbone_weights`); models are always created with random
init (`pretrained=False` / `weights=None`), so nothing ever reaches a hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class BackboneSpec:
    kind: Literal["timm", "swin3d"]
    builder: str  # timm model name, or torchvision.models.video function name ("" = SwinTransformer3d(**kwargs))
    kwargs: dict = field(default_factory=dict)
    note: str = ""


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec("timm", "resnet50", note="paper R50 (use model.freeze_bn=true, as the reference)"),
    "pvt_v2_b2": BackboneSpec("timm", "pvt_v2_b2", note="paper PVT; its unused 1000-class head is not built"),
    "swin3d_t": BackboneSpec("swin3d", "swin3d_t"),
    "swin3d_s": BackboneSpec("swin3d", "swin3d_s", note="the shape the reference instantiates (768-d)"),
    "swin3d_b": BackboneSpec("swin3d", "swin3d_b", note="the paper's caption (1024-d, projected)"),
    # small ones for tests and the demo
    "resnet18": BackboneSpec("timm", "resnet18", note="demo"),
    "test_resnet": BackboneSpec("timm", "test_resnet", note="tests"),
    "pvt_v2_b0": BackboneSpec("timm", "pvt_v2_b0", note="tests"),
    "test_swin3d": BackboneSpec("swin3d", "", dict(patch_size=[2, 4, 4], embed_dim=16, depths=[1, 1, 1, 1],
                                                  num_heads=[1, 1, 2, 2], window_size=[2, 4, 4]), note="tests"),
}


def backbone_spec(name: str) -> BackboneSpec:
    """The registered spec, or any other timm model name run per frame (as before the registry)."""
    if name in BACKBONES:
        return BACKBONES[name]
    if timm.is_model(name):
        return BackboneSpec("timm", name)
    raise ValueError(f"model.visual_backbone: unknown backbone {name!r}; registered: {', '.join(BACKBONES)} "
                     "(or any timm model name)")


def _build_swin3d(spec: BackboneSpec) -> nn.Module:
    from torchvision.models import video
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    model = getattr(video, spec.builder)(weights=None) if spec.builder else SwinTransformer3d(**spec.kwargs)
    model.head = nn.Identity()  # the classifier is unused; dropping it keeps every parameter trained
    return model


class VisualEncoder(nn.Module):
    """A registered backbone plus a 1x1 projection to out_dim channels; `grid` is the one interface.

    Video Swin's patch embedding has temporal stride 2, so T frames give ceil(T/2) time steps. We keep
    torchvision's (checkpoint-compatible) architecture and give each frame the features of the time step
    that covers it (nearest-neighbour repeat in time), so the output always has T steps, one per clip.
    (The reference's Video Swin uses temporal stride 1; torchvision's pretrained weights assume 2.)
    An odd T is completed by repeating the last frame, not by torchvision's zero padding: a one-frame
    image is embedded from an [image, image] tubelet, never from [image, black]. The loaders repeat an
    image over all its clips (snps3_ds.data.collate), as the reference repeats it n_clips times, so no
    blank clip reaches Swin's attention.
    """

    def __init__(self, backbone: str, out_dim: int, checkpoint: str | None = None, freeze_bn: bool = False,
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        spec = backbone_spec(backbone)
        self.kind = spec.kind
        if spec.kind == "timm":
            self.backbone = timm.create_model(spec.builder, pretrained=False, num_classes=0, global_pool="")
        else:
            self.backbone = _build_swin3d(spec)
        if checkpoint:
            load_backbone_weights(self.backbone, checkpoint)
        if freeze_bn:  # after loading: BN statistics and affine terms become buffers (reference R50)
            from timm.layers import freeze_batch_norm_2d

            self.backbone = freeze_batch_norm_2d(self.backbone)
        self.grad_checkpointing = False
        if grad_checkpointing:
            self.set_grad_checkpointing(True)
        channels = self.backbone.num_features
        self.proj = nn.Conv2d(channels, out_dim, kernel_size=1) if channels != out_dim else nn.Identity()
        self.out_dim = out_dim

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward: timm's own switch, or per Swin stage."""
        self.grad_checkpointing = enable
        if self.kind == "timm":
            self.backbone.set_grad_checkpointing(enable)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, clips = frames.shape[:2]
        if self.kind == "timm":
            grid = self.backbone.forward_features(frames.flatten(0, 1))
            if grid.ndim != 4:
                raise ValueError(f"backbone {type(self.backbone).__name__} gives features of shape "
                                 f"{tuple(grid.shape)}; VisualEncoder needs a [N, C, h, w] feature map")
            return self.proj(grid).unflatten(0, (batch, clips))
        grid = self._swin3d(frames)  # [B, T', C, h, w]
        grid = grid.repeat_interleave(-(-clips // grid.shape[1]), dim=1)[:, :clips]
        return self.proj(grid.flatten(0, 1)).unflatten(0, (batch, clips))

    def _swin3d(self, frames: torch.Tensor) -> torch.Tensor:
        swin = self.backbone
        step = swin.patch_embed.tuple_patch_size[0]
        short = -frames.shape[1] % step
        if short:  # repeat the last frame: torchvision would pad time with zeros (a black frame)
            frames = torch.cat([frames, frames[:, -1:].expand(-1, short, -1, -1, -1)], dim=1)
        x = swin.pos_drop(swin.patch_embed(frames.transpose(1, 2)))  # [B, T', h, w, C]
        for stage in swin.features:
            x = checkpoint(stage, x, use_reentrant=False) if self.grad_checkpointing and self.training else stage(x)
        return swin.norm(x).permute(0, 1, 4, 2, 3)


def load_backbone_weights(module: nn.Module, path: str) -> None:
    """Load a local timm/torchvision state dict (.pth, .pt or .safetensors); mismatches are an error naming keys.

    Classifier heads (`fc.`, `head.`, `classifier.`) are dropped; a `module.` prefix (DDP) is stripped.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"model.visual_checkpoint: no file at {file} (weights are never downloaded)")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "module"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))}
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{file}: does not fit backbone {type(module).__name__}: {err}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{file}: does not fit backbone {type(module).__name__}; "
                         f"missing keys {result.missing_keys[:10]}, unexpected keys {result.unexpected_keys[:10]}")
