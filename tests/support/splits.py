"""Random (tokens, lengths, labels) splits for tests that run a real `fit` on tiny models."""

from __future__ import annotations

import torch

from rnnlab.data.arrays import Split


def tiny_split(size: int, seed: int, steps: int = 6, vocab_size: int = 9) -> Split:
    """`size` sequences of `steps` ids in [2, vocab_size) (0, 1 are <unk>, <pad>), two classes."""
    generator = torch.Generator().manual_seed(seed)
    return Split(
        x=torch.randint(2, vocab_size, (size, steps), generator=generator),
        lengths=torch.randint(1, steps + 1, (size,), generator=generator),
        y=torch.randint(0, 2, (size,), generator=generator),
    )
