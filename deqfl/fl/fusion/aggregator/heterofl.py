"""`heterofl`: the width-sliced average of HeteroFL (Diao, Ding and Tarokh, ICLR 2021).

A width-sliced client trained only the leading slice of each tensor (its update's
`coverage`, set by the server). Every entry e is averaged over the updates that trained it:

    delta[e] = sum_k w_k m_k[e] (x_k - x)[e] / sum_k w_k m_k[e],

with m_k[e] = 1 inside update k's slice (everywhere when `coverage` is None) and 0
outside; an entry no update trained keeps delta[e] = 0. With every client at full width
this is `mean` (no options). Plain `mean` on sliced updates would instead shrink every entry outside
the weak clients' slice towards the old global value by their share of the weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deqfl.fl.fusion.base import Aggregate, RuleOptions
from deqfl.fl.fusion.registry import register_aggregator
from deqfl.fl.validation import ValidatedUpdate


@register_aggregator("heterofl", handles_coverage=True)
def heterofl(
    updates: Sequence[ValidatedUpdate], weights: Sequence[float], options: RuleOptions
) -> Aggregate:
    delta = {}
    for key, like in updates[0].delta.items():
        total = torch.zeros_like(like)
        mass = torch.zeros_like(like)
        for u, w in zip(updates, weights):
            coverage = u.update.coverage
            region = tuple(slice(0, n) for n in coverage[key]) if coverage is not None else ...
            total[region] += float(w) * u.delta[key][region]
            mass[region] += float(w)
        delta[key] = torch.where(mass > 0, total / mass.clamp_min(torch.finfo(mass.dtype).tiny), 0.0)
    return Aggregate(delta=delta)
