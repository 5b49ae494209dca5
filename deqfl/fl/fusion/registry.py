"""Name -> implementation registries for weightings, aggregators and server optimisers.

Each entry carries capability flags (`Capabilities`) that the config checks read instead
of hand-written allow-lists: central/local DP (deqfl.fl.privacy.check_fusion), width
slicing (`handles_coverage`), and whether the rule keeps state between rounds. The
compatibility matrix in docs/FUSION.md is generated from these flags
(`deqfl.fl.fusion.matrix`).

Each entry also has its typed parameters, a `RuleOptions` subclass declared in its own
file (`options=` for weightings and aggregators, the class's `Options` for server
optimisers); the config validates `fusion.<kind>_options` against the chosen entry's
model, and the entry receives the validated instance.

Register your own without editing deqfl, before the config that names it is parsed::

    from deqfl.fl.fusion import Weights, register_weighting

    @register_weighting("steps")
    def by_steps(updates, ctx, options):
        return Weights(scores=[u.local_steps for u in updates], quality=[1.0] * len(updates))

and set `weighting = "steps"` in the fusion config. Flags default to False: a rule you
register is refused under DP and with width-sliced tiers until you declare otherwise. A
rule registered without `options` takes none (its options table must stay empty).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from deqfl.errors import ConfigError
from deqfl.fl.fusion.base import Aggregator, RuleOptions, Weighting

if TYPE_CHECKING:
    from deqfl.fl.fusion.optimizer.base import ServerOptimizer

T = TypeVar("T")


@dataclass(frozen=True)
class Capabilities:
    """What a registered rule declares about itself (all False unless declared)."""

    central_dp: bool = False
    """Central DP may stand in for it: the DP step's fixed-denominator uniform mean of
    clipped deltas is this rule (weighting or aggregator)."""
    local_dp: bool = False
    """Uses no client-reported number and only the (locally privatised) deltas, so its
    output is post-processing of private updates (weighting or aggregator)."""
    handles_coverage: bool = False
    """Averages each entry over the updates that trained it (width-sliced HeteroFL
    tiers; aggregators only)."""
    stateful: bool = False
    """Keeps state between rounds, saved in checkpoints via `Fusion.state_dict()`."""


class Registry(Generic[T]):
    """A named set of implementations of one kind (the config key that selects them)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._items: dict[str, T] = {}
        self._flags: dict[str, Capabilities] = {}
        self._options: dict[str, type[RuleOptions]] = {}

    def names(self) -> list[str]:
        return sorted(self._items)

    def register(
        self,
        name: str,
        *,
        replace: bool = False,
        flags: Capabilities | None = None,
        options: type[RuleOptions] | None = None,
    ) -> Callable[[T], T]:
        """Decorator registering its target under `name` with capability `flags` and
        typed `options` (default: the target's `Options` attribute, else no options);
        ValueError if the name is taken, unless `replace`."""

        def decorate(item: T) -> T:
            if name in self._items and not replace:
                raise ValueError(f"{self.key} {name!r} is already registered")
            model = options or getattr(item, "Options", RuleOptions)
            if not (isinstance(model, type) and issubclass(model, RuleOptions)):
                raise TypeError(f"{self.key} {name!r}: options must be a RuleOptions subclass, got {model!r}")
            self._items[name] = item
            self._flags[name] = flags or Capabilities()
            self._options[name] = model
            return item

        return decorate

    def get(self, name: str) -> T:
        """The implementation named `name`; ConfigError naming the choices otherwise."""
        if name not in self._items:
            raise ConfigError(self.unknown(name))
        return self._items[name]

    def flags(self, name: str) -> Capabilities:
        """The capability flags `name` was registered with; ConfigError if unknown."""
        self.get(name)
        return self._flags[name]

    def options(self, name: str) -> type[RuleOptions]:
        """The typed options model `name` was registered with; ConfigError if unknown."""
        self.get(name)
        return self._options[name]

    def having(self, flag: str) -> list[str]:
        """Names of the entries whose `flag` is set, in registration order."""
        return [n for n in self._items if getattr(self._flags[n], flag)]

    def unknown(self, name: object) -> str:
        return f"{self.key}: unknown choice {name!r}; valid choices: {', '.join(self.names())}"


WEIGHTINGS: Registry[Weighting] = Registry("weighting")
AGGREGATORS: Registry[Aggregator] = Registry("aggregator")
OPTIMIZERS: Registry[type[ServerOptimizer]] = Registry("server_optimizer")


def register_weighting(
    name: str,
    *,
    replace: bool = False,
    options: type[RuleOptions] | None = None,
    central_dp: bool = False,
    local_dp: bool = False,
) -> Callable[[Weighting], Weighting]:
    """Register a weighting `(updates, ctx, options) -> Weights` under `name`; `options`
    is its typed parameters model (None: it takes none)."""
    flags = Capabilities(central_dp=central_dp, local_dp=local_dp)
    return WEIGHTINGS.register(name, replace=replace, flags=flags, options=options)


def register_aggregator(
    name: str,
    *,
    replace: bool = False,
    options: type[RuleOptions] | None = None,
    central_dp: bool = False,
    local_dp: bool = False,
    handles_coverage: bool = False,
) -> Callable[[Aggregator], Aggregator]:
    """Register an aggregator `(validated_updates, weights, options) -> Aggregate`;
    `options` is its typed parameters model (None: it takes none)."""
    flags = Capabilities(central_dp=central_dp, local_dp=local_dp, handles_coverage=handles_coverage)
    return AGGREGATORS.register(name, replace=replace, flags=flags, options=options)


def register_server_optimizer(
    name: str, *, replace: bool = False, stateful: bool
) -> Callable[[type[ServerOptimizer]], type[ServerOptimizer]]:
    """Register a `ServerOptimizer` subclass under `name` (its `Options` model holds its
    parameters). Server optimisers see only the fused delta, so every one is allowed
    under DP (post-processing); `stateful` says whether it keeps state between rounds."""
    return OPTIMIZERS.register(name, replace=replace, flags=Capabilities(stateful=stateful))
