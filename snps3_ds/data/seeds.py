"""Seeds the data path derives from the run seed, so every random draw is reproducible and resumable.

`stream_seed` turns (run seed, rank, worker, salt ...) into one 63-bit seed, stable across Python runs;
`WorkerRandom` is a generator created lazily inside each DataLoader worker from such a seed.
"""

from __future__ import annotations

import random

import torch


def stream_seed(seed: int, *parts: int) -> int:
    """One 63-bit seed from the run seed and (rank, worker, ...), stable across Python runs."""
    return random.Random(repr((seed, *parts))).getrandbits(63)


class WorkerRandom:
    """A random.Random created on first use inside each worker, seeded by (seed, rank, worker, salt)."""

    def __init__(self, seed: int, rank: int, salt: int) -> None:
        self.seed, self.rank, self.salt = seed, rank, salt
        self._rng: random.Random | None = None

    def get(self) -> random.Random:
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            self._rng = random.Random(stream_seed(self.seed, self.rank, info.id if info else 0, self.salt))
        return self._rng
