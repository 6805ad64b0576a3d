"""Class-aware batch composition (the paper's remedy for label bias; its exact rule is not public).

Both samplers build whole global batches with an exact number of examples per stage, drawn from
per-class streams (a seeded permutation of the class, reshuffled when it runs out: minority stages
are repeated only after every one of their examples was used). The result is an epoch order the
engine's sampler consumes through ``Task.epoch_order``: a pure function of (seed, epoch), so resume
is exact and DDP ranks agree.

- balanced:  quota_c = B / C for every stage present (C of them);
- selective: quota_c ∝ n_c^power (power 0 = balanced, 1 = the data prior, stratified). Every batch
  has the same composition, which removes the batch-to-batch label noise of random sampling (our
  reading of "selective batch sampling" reducing the run-to-run std; see recipes/sleep/README.md).
"""

from __future__ import annotations

import numpy as np


def class_quotas(counts: np.ndarray, batch: int, power: float, rng: np.random.Generator) -> np.ndarray:
    """Examples per class in one batch: floor of B·q_c, plus one more for class c with probability
    equal to its fractional part (systematic sampling: one uniform offset, unit-spaced points over
    the cumulated fractions), so the batch always holds B and class c gets B·q_c on average."""
    present = counts > 0
    weights = np.where(present, np.power(counts.astype(float), power, where=present, out=np.zeros(len(counts))), 0.0)
    target = batch * weights / weights.sum()
    quotas = np.floor(target).astype(int)
    left = int(round(batch - quotas.sum()))
    if left:
        edges = np.concatenate([[0.0], np.cumsum(target - quotas)])
        edges[-1] = left  # the fractions sum to `left`; pin it so rounding cannot lose a point
        points = rng.uniform() + np.arange(left)
        quotas += np.histogram(points, bins=edges)[0]
    return quotas


def stratified_order(labels: list[int], global_batch: int, seed: int, epoch: int, power: float,
                     num_classes: int = 5) -> list[int]:
    """len(labels) // B whole batches with class quotas from ``class_quotas``."""
    rng = np.random.default_rng([seed, epoch, 7919])
    labels_arr = np.asarray(labels)
    pools = [np.flatnonzero(labels_arr == c) for c in range(num_classes)]
    counts = np.array([len(p) for p in pools])
    streams = [rng.permutation(p) for p in pools]
    pos = [0] * num_classes
    order: list[int] = []
    for _ in range(len(labels) // global_batch):
        batch: list[int] = []
        for c, q in enumerate(class_quotas(counts, global_batch, power, rng)):
            for _ in range(q):
                if pos[c] == len(streams[c]):  # class exhausted: a fresh pass over it
                    streams[c], pos[c] = rng.permutation(pools[c]), 0
                batch.append(int(streams[c][pos[c]]))
                pos[c] += 1
        order += [batch[i] for i in rng.permutation(len(batch))]  # mix classes across DDP ranks
    return order
