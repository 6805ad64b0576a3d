"""Epoch orders for the methods whose batches have structure (``Task.epoch_order``: pure functions of
(seed, epoch), so resume stays exact and DDP ranks agree; each returns exactly
len(dataset) // global_batch * global_batch entries).

- overlapping (DLB, DRRNet online=last): batch k = [chunk k ; chunk k+1] of half-batches, so every
  batch repeats the second half of the one before it (Shen et al., CVPR 2022). An engine epoch then
  brings len/2 new chips; two consecutive engine epochs share one permutation, so every chip is new
  once per two engine epochs.
- paired (CS-KD): every entry encodes (anchor, another chip of the anchor's class) as
  anchor * n + pair; ``PairedDataset`` decodes it, so an item carries its pair to any DDP rank
  (alinlab/cs-kd's PairBatchSampler draws the pair with random.choice over the class, itself included).
"""

from __future__ import annotations

import numpy as np


def _perm(n: int, seed: int, key: int) -> np.ndarray:
    return np.random.default_rng([seed, key, 31]).permutation(n)


def overlapping_order(n: int, seed: int, epoch: int, global_batch: int) -> list[int]:
    half = global_batch // 2
    batches = n // global_batch
    if half == 0 or batches == 0:
        return []
    perm = _perm(n, seed, (epoch - 1) // 2)
    chunks = n // half
    first = ((epoch - 1) % 2) * batches
    order: list[int] = []
    for k in range(first, first + batches):
        for c in (k % chunks, (k + 1) % chunks):
            order.extend(perm[c * half : (c + 1) * half].tolist())
    return order


def paired_order(labels: np.ndarray, seed: int, epoch: int, global_batch: int, exclude_self: bool = False) -> list[int]:
    n = len(labels)
    count = n // global_batch * global_batch
    anchors = _perm(n, seed, epoch)[:count]
    rng = np.random.default_rng([seed, epoch, 37])
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    out = []
    for a in anchors:
        pool = by_class[int(labels[a])]
        if exclude_self and len(pool) > 1:
            pool = pool[pool != a]
        out.append(int(a) * n + int(pool[rng.integers(len(pool))]))
    return out
