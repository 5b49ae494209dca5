"""Built-in weightings; importing this package registers them."""

from deqfl.fl.fusion.weighting import examples, quality, uniform

__all__ = ["examples", "quality", "uniform"]
