"""`deqfl bench ...`: benchmarks that print figures and write them as JSON.

Each benchmark module exposes `register_bench(bench_subparsers)`.
"""

from __future__ import annotations

from deqfl.cli.main import import_optional

BENCH_MODULES = (
    "deqfl.bench.cifar_models_bench",
    "deqfl.bench.deq_bench",
    "deqfl.bench.engine_bench",
    "deqfl.bench.flower_bench",
    "deqfl.bench.robustness_bench",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (print figures, write JSON)")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name in BENCH_MODULES:
        module = import_optional(name)
        if module is not None:
            module.register_bench(benches)
