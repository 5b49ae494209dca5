"""Which fusion combinations are allowed, read from the registries' capability flags.

- DP (`privacy.mode` central or local): the weighting and the aggregator must carry the
  mode's flag (`central_dp`, `local_dp`); any server optimiser is allowed, stateful or
  not, since it only post-processes the fused (privatised) delta.
- Width-sliced tiers (HeteroFL, `fleet.tiers[].width < 1`): the aggregator must carry
  `handles_coverage`; any weighting and server optimiser.
- Robust aggregators (median, trimmed-mean, krum, multi-krum) combine with every server
  optimiser: the optimiser steps along the robust aggregate.

`deqfl.fl.fusion.matrix` writes these rules out as the tables of docs/FUSION.md.
"""

from __future__ import annotations

from deqfl.errors import ConfigError
from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion.registry import AGGREGATORS, WEIGHTINGS

DP_FLAGS = {"central": "central_dp", "local": "local_dp"}


def check_dp(mode: str, config: FusionConfig) -> None:
    """ConfigError unless `config`'s weighting and aggregator carry DP `mode`'s flag."""
    flag = DP_FLAGS[mode]
    weightings, aggregators = WEIGHTINGS.having(flag), AGGREGATORS.having(flag)
    if config.weighting not in weightings or config.aggregator not in aggregators:
        raise ConfigError(
            f"privacy.mode='{mode}': the DP guarantee holds only with fusion.weighting in "
            f"({', '.join(weightings)}) and fusion.aggregator in ({', '.join(aggregators)}) "
            f"(rules flagged {flag}); got weighting='{config.weighting}', "
            f"aggregator='{config.aggregator}'"
        )


def coverage_aggregators() -> list[str]:
    """The aggregators width-sliced tiers may use (flag `handles_coverage`)."""
    return AGGREGATORS.having("handles_coverage")
