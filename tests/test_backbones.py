"""Every registered visual backbone behind the one interface: frames [B, T, 3, H, W] -> grid [B, T, C, h, w]."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snps3_ds.models.visual import BACKBONES, VisualEncoder, load_backbone_weights

OUT = 24


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_forward_shape_finite_and_every_parameter_trains(name: str) -> None:
    torch.manual_seed(0)
    encoder = VisualEncoder(name, OUT).train()
    frames = torch.randn(2, 3, 3, 32, 32)  # 3 clips: odd, so Video Swin's temporal stride 2 needs padding
    grid = encoder(frames)
    assert grid.shape[:3] == (2, 3, OUT) and grid.ndim == 5
    assert torch.isfinite(grid).all()
    grid.square().mean().backward()
    missing = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing[:5]}"


def test_backbone_frozen_batch_norm_holds_no_parameters() -> None:
    """The reference's ResNet-50 trunk with FrozenBatchNorm2d has 23,454,912 parameters (REFERENCE §1.6)."""
    with torch.device("meta"):
        frozen = VisualEncoder("resnet50", 768, freeze_bn=True)
        plain = VisualEncoder("resnet50", 768)
    assert sum(p.numel() for p in frozen.backbone.parameters()) == 23_454_912
    assert sum(p.numel() for p in frozen.proj.parameters()) == 1_573_632
    assert sum(p.numel() for p in plain.backbone.parameters()) == 23_508_032


def test_backbone_video_swin_keeps_one_step_per_clip() -> None:
    encoder = VisualEncoder("test_swin3d", OUT).eval()
    frames = torch.randn(1, 4, 3, 32, 32)
    grid = encoder(frames)
    assert grid.shape[1] == 4
    torch.testing.assert_close(grid[:, 0], grid[:, 1])  # frames 0 and 1 share one temporal patch
    assert encoder(frames[:, :1]).shape[1] == 1  # an image: one clip


def test_backbone_grad_checkpointing_gives_the_same_gradients() -> None:
    for name in ("test_resnet", "test_swin3d"):
        grads = []
        for checkpointing in (False, True):
            torch.manual_seed(0)
            encoder = VisualEncoder(name, OUT, grad_checkpointing=checkpointing).train()
            for module in encoder.modules():  # no dropout / drop-path randomness between the two runs
                if hasattr(module, "p") and isinstance(module.p, float):
                    module.p = 0.0
            encoder(torch.randn(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(1))).sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in encoder.parameters()]))
        torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_backbone_weights_load_from_local_files_and_mismatches_name_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = VisualEncoder("test_resnet", OUT).backbone
    state = {**source.state_dict(), "fc.weight": torch.zeros(3, 3)}  # a classifier head is dropped
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    loaded = VisualEncoder("test_resnet", OUT, checkpoint=str(tmp_path / "w.pth"))
    torch.testing.assert_close(loaded.backbone.conv1[0].weight, source.conv1[0].weight)
    from safetensors.torch import save_file

    save_file({k: v for k, v in state.items() if not k.startswith("layer4")}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \['layer4"):
        load_backbone_weights(VisualEncoder("test_resnet", OUT).backbone, str(tmp_path / "w.safetensors"))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        VisualEncoder("test_resnet", OUT, checkpoint=str(tmp_path / "nope.pth"))


def test_backbone_unknown_name_lists_the_registry() -> None:
    with pytest.raises(ValueError, match="registered: .*resnet50"):
        VisualEncoder("no_such_net", OUT)
