"""Stock OpenRLHF 0.11.2's advantage computation as a reference: what ``tests/test_stock_equivalence.py``
and ``benchmarks/bench_advantages.py`` compare :func:`~openrlhf_ext.algorithms.compute_token_advantages` with."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import torch

from openrlhf_ext.reaches import Where, apply

apply(Where.IMPORT)  # stand-ins for the CUDA-only modules OpenRLHF's Ray modules import


def stock_maker(estimator: str, *, n: int, gamma: float = 1.0, kl_coef: float = 0.0,
                clip_range: tuple[float, float] = (-10.0, 10.0), no_std_norm: bool = False):
    """A ``RemoteExperienceMaker`` made with ``__new__`` and given only the attributes its
    ``compute_advantages_and_returns`` reads (``strategy.args``, ``kl_ctl``, ``advantage_estimator``)."""
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    args = SimpleNamespace(
        rollout=SimpleNamespace(n_samples_per_prompt=n),
        algo=SimpleNamespace(
            advantage=SimpleNamespace(estimator=estimator, gamma=gamma, lambd=1.0, no_std_norm=no_std_norm)
        ),
        reward=SimpleNamespace(clip_range=clip_range),
    )
    maker = RemoteExperienceMaker.__new__(RemoteExperienceMaker)
    maker.strategy = SimpleNamespace(args=args)
    maker.args = args
    maker.advantage_estimator = estimator
    maker.kl_ctl = SimpleNamespace(value=kl_coef)
    return maker


def shuffled_micro_batches(
    lengths: torch.Tensor, micro_batch: int, generator: torch.Generator
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Samples 0..N-1 shuffled into micro-batches as OpenRLHF's experience maker keeps them: each
    micro-batch's global sample ids and its right-padded [b, max L] action mask."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    for start in range(0, len(order), micro_batch):
        ids = order[start : start + micro_batch]
        yield ids, torch.arange(int(lengths[ids].max())).unsqueeze(0) < lengths[ids].unsqueeze(1)


def max_advantage_gap(advantages: Sequence[torch.Tensor], stock_experiences: Sequence) -> float:
    """Largest |difference| of advantages on action tokens."""
    return max(
        float((adv.double() - exp.advantages.double())[exp.action_mask].abs().max())
        for adv, exp in zip(advantages, stock_experiences, strict=True)
    )
