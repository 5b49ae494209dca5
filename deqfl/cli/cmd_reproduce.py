"""`deqfl reproduce`: run the evidence suite (the sweeps, E1-E4, E1F, E2B, E2W; E5 when named;
the CIFAR-10 protocol when asked) and write report.md + results.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from deqfl.errors import ConfigError

DEFAULT_STORE = Path("docs/results")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="run the evidence suite (E1-E5) and build its report",
        description="Run the suite run by run (resumable; finished runs are stored as JSON and "
        "never rerun), then write OUT/report.md, its plots and OUT/results.json.",
    )
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help="smoke test of the pipeline (default; not evidence)")
    scale.add_argument("--full", action="store_true", help="the real suite: MNIST + Fashion-MNIST, 3 seeds (tens of hours)")
    parser.add_argument(
        "--only", default="T0,T1,E1,E2,E3,E4,E1F,E2B,E2W",
        help="comma-separated experiments, e.g. E1,E3 (the sweeps T0, learning rates, and T1, "
        "fusion parameters, run in --full only; E1F: E1 at more widths, E2B: E2 where budgets bind; E2W: warm starts and correction training on E2B's cell; E5, personalisation, only when named: its section goes to STORE/E5.md)",
    )
    parser.add_argument(
        "--datasets", default=None, metavar="NAMES",
        help="comma-separated data sets to keep, e.g. fashion-mnist (default: all of the scale's)",
    )
    parser.add_argument(
        "--seeds", default=None, metavar="SEEDS",
        help="comma-separated seeds to keep, e.g. 0 (default: all of the scale's; the sweeps keep their own seed)",
    )
    parser.add_argument(
        "--methods", default=None, metavar="NAMES",
        help="comma-separated methods to keep, as the report names them, e.g. mdeq-small-8,resnet-8 (default: all)",
    )
    parser.add_argument(
        "--groups", default=None, metavar="NAMES",
        help="comma-separated groups (fleet, width or swept value) to keep, e.g. widths=8-16,mixed (default: all)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/reproduce-quick|full)")
    parser.add_argument(
        "--store", type=Path, default=None,
        help=f"stored results folder (default: {DEFAULT_STORE} for --full, OUT/results for --quick)",
    )
    parser.add_argument(
        "--data-dir", action="append", default=[], metavar="DATASET=PATH",
        help="where a data set's files are, e.g. fashion-mnist=../shared/data/fashion-mnist (repeatable)",
    )
    parser.add_argument("--with-cifar", action="store_true",
                        help="add the CIFAR-10 protocol (docs/CIFAR_PROTOCOL.md; with --quick: a smoke test of it)")
    parser.add_argument("--cifar-only", action="store_true",
                        help="run the CIFAR-10 protocol's runs alone (implies --with-cifar)")
    parser.add_argument("--gpu", action="store_true",
                        help="--with-cifar: the CIFAR-10 protocol at its GPU size, on experiment.device=cuda")
    parser.add_argument(
        "--parallel", type=int, default=1, metavar="K",
        help="run K suite runs at once, each with max(1, cores // K) client worker processes "
        "(default 1: one run at a time on every core); results are the same for any K",
    )
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the store; run nothing")
    parser.set_defaults(func=reproduce_command)


def reproduce_command(args: argparse.Namespace) -> int:
    from deqfl.experiments.reproduce.report import build_report  # noqa: PLC0415
    from deqfl.experiments.reproduce.runner import run_suite  # noqa: PLC0415
    from deqfl.experiments.reproduce.store import load_results  # noqa: PLC0415
    from deqfl.experiments.reproduce import personal_protocol, personal_report  # noqa: PLC0415
    from deqfl.experiments.reproduce.cifar_protocol import cifar_scale  # noqa: PLC0415
    from deqfl.experiments.reproduce.suite import EXPERIMENTS, FULL, QUICK, borrowed_runs, build_suite, select  # noqa: PLC0415

    mode = "full" if args.full else "quick"
    only = tuple(e.strip().upper() for e in args.only.split(",") if e.strip())
    valid = EXPERIMENTS + (personal_protocol.EXPERIMENT,)
    unknown = [e for e in only if e not in valid]
    if unknown:
        raise ConfigError(f"--only: unknown experiment(s) {unknown}; valid choices: {', '.join(valid)}")
    data_dirs = {}
    for item in args.data_dir:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--data-dir {item!r}: expected DATASET=PATH, e.g. fashion-mnist=/data/fmnist")
        data_dirs[name] = path
    if args.parallel < 1:
        raise ConfigError(f"--parallel {args.parallel}: give at least 1 run at a time")
    out = args.out or Path("runs") / f"reproduce-{mode}"
    store = args.store or (DEFAULT_STORE if mode == "full" else out / "results")
    with_cifar = args.with_cifar or args.cifar_only
    if args.gpu and not with_cifar:
        raise ConfigError("--gpu sizes the CIFAR-10 protocol: add --with-cifar or --cifar-only")
    suite_scale = FULL if mode == "full" else QUICK
    specs = build_suite(suite_scale, only, with_cifar=with_cifar, gpu=args.gpu)
    personal_scale = personal_protocol.FULL if mode == "full" else personal_protocol.QUICK
    if personal_protocol.EXPERIMENT in only:
        specs += personal_protocol.build_e5(personal_scale, cifar_scale(suite_scale, args.gpu) if with_cifar else None)
    if args.cifar_only:
        specs = [s for s in specs if s.dataset == "cifar10"]
    specs = select(specs, args.datasets, args.seeds, args.methods, args.groups)
    missing = sorted({s.dataset for s in specs if s.dataset in ("fashion-mnist", "cifar10")} - set(data_dirs))
    if missing and not args.report_only:
        raise ConfigError(
            f"the suite needs the files of {', '.join(missing)}: pass --data-dir NAME=PATH for each "
            "(see README, Data)"
        )
    if args.report_only:
        stored = load_results(store)
        wanted = {s.run_id for s in specs}
        results = [r for r in stored if r["run_id"] in wanted]
    else:
        results = run_suite(specs, store, out, data_dirs, parallel=args.parallel)
        stored = load_results(store)
    results += borrowed_runs(specs, stored)  # e.g. E2's runs that E3's tables read
    title = "deqfl evidence suite (--quick: a smoke test, not evidence)" if mode == "quick" else "deqfl evidence suite (--full)"
    report = build_report(results, out, title)
    print(f"report: {report}")
    if personal_protocol.EXPERIMENT in only:
        # E5.md lives in the store: it shows every stored E5 run, whatever --datasets/--seeds ran now
        # the full E5 always counts its CIFAR-10 cell (at the size asked for), so E5.md says what is missing
        e5 = personal_protocol.build_e5(personal_scale, cifar_scale(suite_scale, args.gpu) if with_cifar or mode == "full" else None)
        e5_ids = {s.run_id for s in e5}
        e5_runs = [r for r in stored if r["run_id"] in e5_ids]
        print(f"E5: {personal_report.write_e5(e5_runs, store / 'E5.md', e5)}")
    return 0
