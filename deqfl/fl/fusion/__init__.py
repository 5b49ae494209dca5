"""Server-side fusion of client updates: a weighting, an aggregator and a server
optimiser behind `Fusion`; central DP wraps it (`CentralDPFusion`), and so does SCAFFOLD
(`ScaffoldFusion`, `fusion.control_variates = "scaffold"`).

    from deqfl.fl.fusion import FusionConfig, make_fusion
    fusion = make_fusion(FusionConfig(weighting="quality", aggregator="mean"), None, 0.0, seed)
    result = fusion.fuse(global_state, updates, ctx)
    saved = fusion.state_dict()          # the server optimiser's state, for checkpoints

Built-in weightings: examples, uniform, quality (q from residual, budget or loss).
Built-in aggregators: mean, fednova, heterofl, median, trimmed-mean, krum, multi-krum.
Built-in server optimisers: sgd, fedavgm, fedadam, fedyogi, fedadagrad.
Each entry takes its own typed options (`RuleOptions` models; `fusion.weighting_options`,
`fusion.aggregator_options`, `fusion.server_optimizer_options`). Add your own with
`register_weighting` / `register_aggregator` / `register_server_optimizer`;
docs/FUSION.md lists the options and says which combinations are allowed.
"""

from deqfl.fl.fusion.base import Aggregate, Aggregator, RuleOptions, Weighting, Weights
from deqfl.fl.fusion.registry import (
    Capabilities,
    register_aggregator,
    register_server_optimizer,
    register_weighting,
)
from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion import aggregator, optimizer, weighting  # noqa: F401  (registers the built-ins)
from deqfl.fl.fusion.optimizer.base import OptimizerOptions, ServerOptimizer, Step
from deqfl.fl.fusion.fusion import Combined, Fusion, FusionResult
from deqfl.fl.fusion.central_dp import CentralDPFusion, make_fusion
from deqfl.fl.fusion.scaffold import ScaffoldFusion
from deqfl.fl.update import ClientUpdate, FusionContext

__all__ = [
    "Aggregate",
    "Aggregator",
    "Capabilities",
    "CentralDPFusion",
    "ClientUpdate",
    "Combined",
    "Fusion",
    "FusionConfig",
    "FusionContext",
    "FusionResult",
    "OptimizerOptions",
    "RuleOptions",
    "ScaffoldFusion",
    "ServerOptimizer",
    "Step",
    "Weighting",
    "Weights",
    "make_fusion",
    "register_aggregator",
    "register_server_optimizer",
    "register_weighting",
]
