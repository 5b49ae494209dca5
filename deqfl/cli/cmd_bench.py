"""`deqfl bench ...`: benchmarks that print figures and write them as JSON.

Each benchmark module exposes `register_bench(bench_subparsers)`.
"""

from __future__ import annotations

import importlib

BENCH_MODULES = (
    "deqfl.bench.deq_bench",
    "deqfl.bench.engine_bench",
    "deqfl.bench.flower_bench",
    "deqfl.bench.robustness_bench",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (print figures, write JSON)")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register_bench(benches)
