"""Name -> implementation registries for weightings and aggregators.

Register your own without editing deqfl, before the config that names it is parsed::

    from deqfl.fl.fusion import Weights, register_weighting

    @register_weighting("steps")
    def by_steps(updates, ctx, config):
        return Weights(scores=[u.local_steps for u in updates], quality=[1.0] * len(updates))

and set `weighting = "steps"` in the fusion config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from deqfl.errors import ConfigError
from deqfl.fl.fusion.base import Aggregator, Weighting

T = TypeVar("T")


class Registry(Generic[T]):
    """A named set of implementations of one kind (the config key that selects them)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._items: dict[str, T] = {}

    def names(self) -> list[str]:
        return sorted(self._items)

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator registering its target under `name` (ValueError if taken, unless
        `replace`)."""

        def decorate(item: T) -> T:
            if name in self._items and not replace:
                raise ValueError(f"{self.key} {name!r} is already registered")
            self._items[name] = item
            return item

        return decorate

    def get(self, name: str) -> T:
        """The implementation named `name`; ConfigError naming the choices otherwise."""
        if name not in self._items:
            raise ConfigError(self.unknown(name))
        return self._items[name]

    def unknown(self, name: object) -> str:
        return f"{self.key}: unknown choice {name!r}; valid choices: {', '.join(self.names())}"


WEIGHTINGS: Registry[Weighting] = Registry("weighting")
AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def register_weighting(name: str, *, replace: bool = False) -> Callable[[Weighting], Weighting]:
    """Register a weighting `(updates, ctx, config) -> Weights` under `name`."""
    return WEIGHTINGS.register(name, replace=replace)


def register_aggregator(name: str, *, replace: bool = False) -> Callable[[Aggregator], Aggregator]:
    """Register an aggregator `(validated_updates, weights, config) -> Aggregate`."""
    return AGGREGATORS.register(name, replace=replace)
