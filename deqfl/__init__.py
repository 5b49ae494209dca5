"""deqfl: federated learning with deep equilibrium (DEQ) models on heterogeneous devices."""

__version__ = "0.1.0"
