"""Attentive masking on the training side (REFERENCE §2.4): in a share of steps, the fusion-pass MLM
masks the tokens that receive the most attention in the text pass instead of the loader's mask.

It lives with the task, not the loader, because it needs the text pass of the current model. Which steps
use it is drawn per rank from a seeded generator, as the reference draws it per GPU.
"""

from __future__ import annotations

import dataclasses
import random

import torch

from snps3_ds.data.batch import VideoTextBatch
from snps3_ds.data.text.mssm import attentive_mask
from snps3_ds.data.text.tokens import SpecialIds


class AttentiveMasking:
    def __init__(self, step_probability: float, token_probability: float, special: SpecialIds,
                 seed: int = 0, rank: int = 0) -> None:
        if not 0.0 < step_probability <= 1.0:
            raise ValueError(f"masking.attentive_probability must be in (0, 1], got {step_probability}")
        self.step_probability, self.token_probability, self.special = step_probability, token_probability, special
        self.steps = random.Random(f"attentive/{seed}/{rank}")
        self.generator = torch.Generator().manual_seed(random.Random(f"attentive-tokens/{seed}/{rank}").getrandbits(63))

    def state_dict(self) -> dict:
        return {"steps": self.steps.getstate(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.steps.setstate(state["steps"])
        self.generator.set_state(state["generator"])

    def draw(self) -> bool:
        """Whether this step masks by attention."""
        return self.steps.random() < self.step_probability

    def apply(self, batch: VideoTextBatch, importance: torch.Tensor) -> VideoTextBatch:
        """The batch with mlm_ids/mlm_labels replaced by an attention-proportional [MASK]ing of text_ids."""
        ids = batch.text_ids.cpu()
        masked, labels = attentive_mask(ids, batch.text_mask.cpu(), importance.cpu(), self.special,
                                        self.generator, self.token_probability)
        device = batch.text_ids.device
        return dataclasses.replace(batch, mlm_ids=masked.to(device), mlm_labels=labels.to(device))
