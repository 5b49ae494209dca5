"""Models: cells, the DEQ classifier, explicit baselines, the unrolled twin, the registry,
the federated state and anytime evaluation."""

from deqfl.models.anytime import accuracy, accuracy_at_budgets, find_deq
from deqfl.models.cells import CellFamily, InjectedResidualCell, MultiscaleCell, cell_names, register_cell
from deqfl.models.deq_classifier import DEFAULT_SOLVER, DEQClassifier
from deqfl.models.explicit import CNN, CifarResNet, ResNet
from deqfl.models.federated import federated_state, load_federated_state, parameter_count, serialized_bytes
from deqfl.models.options import ModelOptions
from deqfl.models.registry import (
    build_model,
    default_input_shape,
    list_models,
    model_options,
    register_model,
    validate_model_options,
)
from deqfl.models.unrolled import UnrolledClassifier

__all__ = [
    "CNN",
    "CellFamily",
    "CifarResNet",
    "DEFAULT_SOLVER",
    "DEQClassifier",
    "InjectedResidualCell",
    "ModelOptions",
    "MultiscaleCell",
    "ResNet",
    "UnrolledClassifier",
    "accuracy",
    "accuracy_at_budgets",
    "build_model",
    "cell_names",
    "default_input_shape",
    "federated_state",
    "find_deq",
    "list_models",
    "load_federated_state",
    "model_options",
    "parameter_count",
    "register_cell",
    "register_model",
    "serialized_bytes",
    "validate_model_options",
]
