"""The engine's resumable, length-grouping distributed sampler."""

from __future__ import annotations

from skdcli.engine.trainer import ResumableDistributedSampler

DATA = list(range(50))
LENGTHS = [(i * 37) % 23 for i in DATA]


def streams(world: int, **kw) -> list[list[int]]:
    samplers = [ResumableDistributedSampler(DATA, world, r, seed=0, **kw) for r in range(world)]
    for s in samplers:
        s.set_epoch(3)
    out = [list(iter(s)) for s in samplers]
    assert [len(x) for x in out] == [len(s) for s in samplers]
    return out


def test_a_step_sees_the_same_examples_on_one_or_two_ranks() -> None:
    (one,) = streams(1, lengths=LENGTHS, global_batch=8, group_batches=2)
    two = streams(2, lengths=LENGTHS, global_batch=8, group_batches=2)
    assert len(one) == 48  # 50 examples -> 6 full global batches
    micro = 4  # per rank
    for step in range(len(one) // 8):
        ranks = [two[r][step * micro : (step + 1) * micro] for r in range(2)]
        assert sorted(ranks[0] + ranks[1]) == sorted(one[step * 8 : (step + 1) * 8])


def test_batches_group_similar_lengths_and_order_is_seeded() -> None:
    (grouped,) = streams(1, lengths=LENGTHS, global_batch=8, group_batches=2)
    (plain,) = streams(1)
    spread = lambda order: sum(
        max(LENGTHS[i] for i in order[k : k + 8]) - min(LENGTHS[i] for i in order[k : k + 8]) for k in range(0, 48, 8)
    )
    assert spread(grouped) < spread(plain) / 2
    assert streams(1, lengths=LENGTHS, global_batch=8, group_batches=2)[0] == grouped  # deterministic


def test_start_index_resumes_mid_epoch() -> None:
    (full,) = streams(1, lengths=LENGTHS, global_batch=8)
    sampler = ResumableDistributedSampler(DATA, 1, 0, seed=0, lengths=LENGTHS, global_batch=8)
    sampler.set_epoch(3)
    sampler.start_index = 16
    assert list(iter(sampler)) == full[16:] and len(sampler) == len(full) - 16
