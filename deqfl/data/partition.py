"""Split a training set across federated clients: `partition_indices`.

The partitioners are flwr-datasets' own, run offline on an in-memory `datasets.Dataset`
with a `label` column and a `row` column (the index into your arrays), whose rows are
first shuffled with `seed`; each client's indices are read back from `row`. Schemes and
their parameters:

- "iid": equal-size random split (IidPartitioner on the shuffled rows).
- "dirichlet": per class, client shares drawn from Dirichlet(alpha) (DirichletPartitioner,
  no self-balancing). `alpha` > 0 (default 0.5; smaller = more label skew).
  `min_partition_size` (default min(10, n // num_clients)): a draw leaving any client
  with fewer samples is redrawn; after 11 draws a DataError says what to change.
- "pathological": each client holds exactly `classes_per_client` (k, default 2) classes
  (PathologicalPartitioner, class_assignment_mode "first-deterministic": client i gets
  class i mod C plus k-1 random others; each class is split evenly among its holders).
- "shards": McMahan et al.'s shards (ShardPartitioner): rows sorted by label, cut into
  num_clients * `shards_per_client` (default 2) equal shards, dealt at random; the
  remainder n mod (num_clients * shards_per_client) is assigned to no client.
- "quantity-skew": labels IID, sizes skewed (SizePartitioner): every client first gets
  `min_partition_size` samples (default min(10, n // num_clients)), the rest is shared
  in proportions drawn from Dirichlet(`alpha`, default 0.5) over clients.

Every scheme is deterministic given (labels, num_clients, seed, params), returns one
sorted int64 index array per client, never an empty one (DataError instead), and
never gives a sample to two clients. Samples that no client gets (shards, or
pathological with fewer clients than classes) trigger a warning.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from deqfl.errors import DataError

SCHEMES = ("iid", "dirichlet", "pathological", "shards", "quantity-skew")
PARAMS = {
    "iid": (),
    "dirichlet": ("alpha", "min_partition_size"),
    "pathological": ("classes_per_client",),
    "shards": ("shards_per_client",),
    "quantity-skew": ("alpha", "min_partition_size"),
}


def _flwr() -> tuple[object, object]:
    """The `datasets` and `flwr_datasets.partitioner` modules, imported offline (slow: ~3 s)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    from flwr_datasets import partitioner

    return datasets, partitioner


def _positive_int(name: str, value: object, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise DataError(f"{name}={value} is too large: at most {upper} here")
    return int(value)


def _alpha(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise DataError(f"alpha must be a finite number > 0, got {value!r}")
    return float(value)


def _default_min_size(n: int, num_clients: int) -> int:
    return min(10, n // num_clients)


def _quantity_sizes(rng: np.random.Generator, n: int, num_clients: int, alpha: float, min_size: int) -> list[int]:
    """Client sizes >= min_size summing to n; the surplus split by Dirichlet(alpha) shares
    (largest-remainder rounding)."""
    surplus = n - num_clients * min_size
    share = rng.dirichlet(np.full(num_clients, alpha)) * surplus
    sizes = np.floor(share).astype(np.int64)
    leftover = surplus - int(sizes.sum())
    sizes[np.argsort(sizes - share, kind="stable")[:leftover]] += 1
    return [int(s) + min_size for s in sizes]


def _resolve(scheme: str, labels: np.ndarray, num_clients: int, params: dict[str, object]) -> dict[str, object]:
    """The scheme's parameters, validated, with defaults filled in."""
    n = len(labels)
    if scheme in ("dirichlet", "quantity-skew"):
        return {"alpha": _alpha(params.get("alpha", 0.5)),
                "min_partition_size": _positive_int(
                    "min_partition_size", params.get("min_partition_size", _default_min_size(n, num_clients)),
                    upper=n // num_clients)}
    if scheme == "pathological":
        return {"classes_per_client": _positive_int(
            "classes_per_client (k)", params.get("classes_per_client", 2), upper=len(np.unique(labels)))}
    if scheme == "shards":
        return {"shards_per_client": _positive_int(
            "shards_per_client", params.get("shards_per_client", 2), upper=n // num_clients)}
    return {}


def _make_partitioner(pt: object, scheme: str, n: int, num_clients: int, seed: int,
                      p: dict[str, object], rng: np.random.Generator) -> object:
    if scheme == "iid":
        return pt.IidPartitioner(num_partitions=num_clients)
    if scheme == "dirichlet":
        return pt.DirichletPartitioner(num_partitions=num_clients, partition_by="label", alpha=p["alpha"],
                                       min_partition_size=p["min_partition_size"],
                                       self_balancing=False, seed=seed)
    if scheme == "pathological":
        return pt.PathologicalPartitioner(num_partitions=num_clients, partition_by="label",
                                          num_classes_per_partition=p["classes_per_client"],
                                          class_assignment_mode="first-deterministic", seed=seed)
    if scheme == "shards":
        return pt.ShardPartitioner(num_partitions=num_clients, partition_by="label",
                                   num_shards_per_partition=p["shards_per_client"], seed=seed)
    sizes = _quantity_sizes(rng, n, num_clients, p["alpha"], p["min_partition_size"])
    return pt.SizePartitioner(partition_sizes=sizes)


def partition_indices(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    seed: int,
    **params: object,
) -> list[np.ndarray]:
    """Indices into `labels` for each of `num_clients` clients under `scheme` (see module doc).

    Raises DataError for an unknown scheme or parameter, invalid values (alpha <= 0, k out
    of 1..number of classes, ...), more clients than samples, or a client left empty.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if scheme not in SCHEMES:
        raise DataError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    unknown = sorted(set(params) - set(PARAMS[scheme]))
    if unknown:
        raise DataError(f"partition scheme {scheme!r} takes no parameter {', '.join(unknown)}; "
                        f"valid: {', '.join(PARAMS[scheme]) or 'none'}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed must be an integer, got {seed!r}")
    n = len(labels)
    num_clients = _positive_int("num_clients", num_clients)
    if num_clients > n:
        raise DataError(f"cannot split {n} samples across {num_clients} clients: "
                        "more clients than samples; use at most as many clients as samples")
    resolved = _resolve(scheme, labels, num_clients, params)

    datasets, pt = _flwr()
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    # Plain (python) format: flwr reads the label column whole, which numpy format slows 20x.
    table = datasets.Dataset.from_dict({"label": labels[order], "row": order})
    partitioner = _make_partitioner(pt, scheme, n, num_clients, int(seed), resolved, rng)
    partitioner.dataset = table
    parts = _read_partitions(partitioner, num_clients, scheme, resolved)
    _check(parts, n, scheme)
    return parts


def _read_partitions(partitioner: object, num_clients: int, scheme: str,
                     params: dict[str, object]) -> list[np.ndarray]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # flwr's retry notices; our checks report instead
            return [np.sort(partitioner.load_partition(i).with_format("numpy")["row"][:].astype(np.int64))
                    for i in range(num_clients)]
    except ValueError as exc:
        if scheme == "dirichlet":
            reason = (f"11 draws with alpha={params['alpha']} all left some client with fewer than "
                      f"min_partition_size={params['min_partition_size']} samples; raise alpha, "
                      "lower min_partition_size or use fewer clients")
        else:
            reason = f"{exc}; use fewer clients or change the scheme's parameters"
        raise DataError(f"cannot make a {scheme!r} partition for {num_clients} clients: {reason}") from exc


def _check(parts: list[np.ndarray], n: int, scheme: str) -> None:
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise DataError(f"the {scheme!r} partition left client(s) {empty[:10]} with no samples; "
                        "use fewer clients or change the scheme's parameters")
    assigned = sum(len(p) for p in parts)
    if assigned < n:
        warnings.warn(f"{scheme!r} partition: {n - assigned} of {n} samples belong to no client",
                      stacklevel=3)
