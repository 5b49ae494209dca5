"""Server-side fusion of client updates: a weighting and an aggregator behind `Fusion`.

    from deqfl.fl.fusion import Fusion, FusionConfig
    result = Fusion(FusionConfig(weighting="quality", aggregator="mean")).fuse(
        global_state, updates, ctx)

Built-in weightings: examples, uniform, quality (q from residual, budget or loss).
Built-in aggregators: mean, fednova, heterofl, median, trimmed-mean, krum, multi-krum.
Add your own with `register_weighting` / `register_aggregator`.
"""

from deqfl.fl.fusion.base import Aggregate, Aggregator, Weighting, Weights
from deqfl.fl.fusion.registry import register_aggregator, register_weighting
from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion import aggregator, weighting  # noqa: F401  (registers the built-ins)
from deqfl.fl.fusion.fusion import Fusion, FusionResult
from deqfl.fl.update import ClientUpdate, FusionContext

__all__ = [
    "Aggregate",
    "Aggregator",
    "ClientUpdate",
    "Fusion",
    "FusionConfig",
    "FusionContext",
    "FusionResult",
    "Weighting",
    "Weights",
    "register_aggregator",
    "register_weighting",
]
