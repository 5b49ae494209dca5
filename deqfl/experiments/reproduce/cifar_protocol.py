"""The CIFAR-10 protocol of the evidence suite (`deqfl reproduce --full --with-cifar`),
sized to a 2-core machine; docs/CIFAR_PROTOCOL.md gives the measurements behind the sizes.

Shared by every CIFAR-10 run (`CifarScale`): 20 clients under Dirichlet 0.5, half of them
sampled a round; every client runs a fixed number of local steps (`local_steps`, a tier
key) of batch 64 with Adam at the run's base rate, cosine-decayed over the rounds;
augmentation on (`data.augment = "crop-flip"`); the per-round accuracy on `eval_subset`
seeded test rows, the final one on the whole test set; the anytime curve every
`anytime_every` rounds. DEQs solve at the strong cap 8 (a weak device: 2).

Runs, in this order, after the MNIST-like data sets' runs:

- T0 (CIFAR): the learning-rate sweep, `SWEEP_LRS` for each family's `SWEEP_MODELS` model, FedAvg,
  homogeneous devices, `sweep_rounds` rounds, seed 100; chosen by the clients' held-back
  accuracy (never the test set). `LEARNING_RATES` holds a family's rate for all its widths;
  the DEQ is also swept under SGD (`SGD_SWEEP_LRS`), the optimiser of E3's FedNova run.
- E1 as frontiers: every model of `FAMILIES` (three widths each of the multiscale DEQ
  solving at 16x16 and 8x8 and the CIFAR ResNet, four of the two-layer CNN) under FedAvg
  with homogeneous devices.
- E2: the fleets of the MNIST suite with `HEADLINE["deq"]` and `HEADLINE["cnn"]` (the
  CNN runs partial work and HeteroFL).
- E3: the fusion rules under the mixed fleet at Dirichlet `E3_ALPHAS` (the rules E2 already
  ran at the default 0.5 are read from E2, as on MNIST), and `SGD_CONTROL`, FedAvg with
  FedNova's SGD clients.

`CPU` is the protocol for this machine; `GPU` the same runs at full size with
`experiment.device = "cuda"` (more rounds, a local epoch, the whole test set each round).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from deqfl.experiments.reproduce.report_common import md_table
from deqfl.experiments.reproduce.suite import (
    E2_ALPHA,
    E3_FROM_E2,
    FLEETS,
    FUSION_RULES,
    HETEROFL_WIDTH,
    STRONG_CAP,
    WEAK_CAP,
    RunSpec,
    SuiteScale,
    _rule_overrides,
)

CIFAR = "cifar10"
SWEEP = "T0C"
"""The experiment label of the CIFAR-10 sweep's runs (selected by `--only T0`), apart from
the MNIST sweep's "T0" so that the report's tables do not mix them (`sweep_section`)."""
TARGET = 0.60
"""The accuracy whose MB-to-target E1 reports (`suite.TARGETS["cifar10"]`)."""

MODELS: dict[str, tuple[str, ...]] = {
    "mdeq-tiny-8": ("model.name=mdeq-tiny-8",),
    "mdeq-small-8": ("model.name=mdeq-small-8",),
    "mdeq-large-8": ("model.name=mdeq-large-8",),
    "resnet-8": ("model.name=resnet-8",),
    "resnet-14": ("model.name=resnet-14",),
    "resnet-20": ("model.name=resnet-20",),
    "cnn-w16": ("model.name=cnn-small", "model.options={widths=[16, 32]}"),
    "cnn-w32": ("model.name=cnn-small", "model.options={widths=[32, 64]}"),
    "cnn-w64": ("model.name=cnn-small", "model.options={widths=[64, 128]}"),
    "cnn-w96": ("model.name=cnn-small", "model.options={widths=[96, 192]}"),
}
"""The CIFAR-10 models by label, as overrides (parameters: 65.5K, 172K, 265K; 75K, 173K,
270K; 25.6K, 60K, 158K, 292K)."""
FAMILIES = {
    "deq": ("mdeq-tiny-8", "mdeq-small-8", "mdeq-large-8"),
    "resnet": ("resnet-8", "resnet-14", "resnet-20"),
    "cnn": ("cnn-w16", "cnn-w32", "cnn-w64", "cnn-w96"),
}
"""E1's frontiers: each family's models from the smallest. The CNN has a fourth, smaller
width (cnn-w16), the cheapest point at the small payloads where the DEQ's claim lies."""
SWEEP_MODELS = {"deq": "mdeq-small-8", "resnet": "resnet-14", "cnn": "cnn-w64"}
"""The model of each family whose rates T0 sweeps: the one of about 170K parameters."""
HEADLINE = {"deq": "mdeq-small-8", "cnn": "cnn-w64"}
"""E2's and E3's models: the DEQ of about 170K parameters and the CNN nearest it (the
explicit family HeteroFL can slice)."""
E1_HEADLINE = (HEADLINE["deq"], "cnn-w32")
"""E1's headline point, run on every seed of the suite (every other CIFAR-10 run on its
first seed only): the headline DEQ and the smallest explicit model at most 1 point below
it, cnn-w32 (seed 0's frontier, docs/RESULTS.md section E1F)."""

SWEEP_LRS = (3e-4, 1e-3, 3e-3, 1e-2)
LEARNING_RATES = {"deq": 3e-3, "resnet": 3e-3, "cnn": 1e-3}
"""Adam's base rate per family: the best held-back accuracy of T0 (CIFAR) in the store
(docs/results, 2026-12-02; the report's sweep table), for each family's `SWEEP_MODELS` model."""
SGD_SWEEP_LRS = (0.01, 0.03, 0.1)
SGD_LR = 0.01
"""FedNova assumes heavy-ball SGD clients, so its E3 run trains the DEQ with SGD (momentum
0.9) at this rate: the best held-back accuracy of T0's `<deq>-sgd` runs in the store
(2026-12-02; the bottom of `SGD_SWEEP_LRS`)."""
SGD_CONTROL = "fedavg-sgd"
"""E3's control for FedNova on CIFAR-10: FedAvg with FedNova's SGD clients. The other
rules train with Adam, so FedNova's difference from FedAvg would mix its normalisation
with its optimiser; FedNova against this run is the normalisation alone."""
SGD_RULES = ("fednova", SGD_CONTROL)
E3_RULES = (*FUSION_RULES, SGD_CONTROL)
E3_ALPHAS = (0.1, E2_ALPHA)


@dataclass(frozen=True)
class CifarScale:
    """The sizes of the CIFAR-10 runs (module docstring). `local_steps` None: one local
    epoch a round."""

    rounds: int
    local_steps: int | None
    eval_subset: int
    anytime_every: int
    sweep_rounds: int
    device: str = "cpu"
    batch_size: int = 64
    num_clients: int = 20
    fraction: float = 0.5
    sweep_seed: int = 100
    e1_models: tuple[str, ...] | None = None
    """E1's models (None: every model of `FAMILIES`)."""

    def base(self) -> tuple[str, ...]:
        device = () if self.device == "cpu" else (f"experiment.device={self.device}",)
        return device + (
            f"data.dataset={CIFAR}", f"data.num_clients={self.num_clients}", f"sampling.fraction={self.fraction}",
            f"experiment.rounds={self.rounds}", f"data.eval_subset={self.eval_subset}",
            f"evaluation.anytime_every={self.anytime_every}", "data.augment=crop-flip",
            f"train.batch_size={self.batch_size}", "train.optimizer=adam", "train.lr_schedule=cosine",
        )


CPU = CifarScale(rounds=120, local_steps=20, eval_subset=1000, anytime_every=30, sweep_rounds=10)
GPU = CifarScale(rounds=200, local_steps=None, eval_subset=0, anytime_every=50, sweep_rounds=20, device="cuda")
QUICK = CifarScale(rounds=2, local_steps=2, eval_subset=200, anytime_every=0, sweep_rounds=0,
                   e1_models=("mdeq-tiny-8", "resnet-8", "cnn-w32"))
"""A smoke test of the CIFAR-10 pipeline (`deqfl reproduce --quick --with-cifar`): not evidence."""
SLICE = dataclasses.replace(GPU, rounds=15, anytime_every=0, sweep_rounds=0, e1_models=(HEADLINE["deq"], "resnet-8"))
"""The GPU slice (`--quick --with-cifar --gpu`, scripts/gpu_cifar.sh): `GPU`'s runs at 15
rounds, E1 for the headline DEQ and ResNet-8 only."""


def cifar_scale(suite_scale: SuiteScale, gpu: bool = False) -> CifarScale:
    """The CIFAR-10 size for a suite scale: for a suite without a sweep (--quick) `QUICK`,
    or `SLICE` with `gpu`; else `CPU`, or `GPU` with `gpu`."""
    if not suite_scale.sweep_rounds:
        return SLICE if gpu else QUICK
    return GPU if gpu else CPU


def tiers(scale: CifarScale, strong_share: float, weak_share: float, weak_fraction: float | None = None,
          weak_width: float | None = None) -> str:
    """`suite._tiers`' fleet with the scale's local work on every tier."""
    local = f", local_steps={scale.local_steps}" if scale.local_steps else ""
    out = []
    if strong_share > 0:
        out.append(f"{{name='strong', share={strong_share}, max_iter={STRONG_CAP}, speed=1e-5, bandwidth_mbps=100.0{local}}}")
    if weak_share > 0:
        extra = local + (f", step_fraction={weak_fraction}" if weak_fraction else "")
        extra += f", width={weak_width}" if weak_width else ""
        out.append(f"{{name='weak', share={weak_share}, max_iter={WEAK_CAP}, speed=4e-5, bandwidth_mbps=10.0{extra}}}")
    return "fleet.tiers=[" + ", ".join(out) + "]"


def family(label: str) -> str:
    return next(name for name, labels in FAMILIES.items() if label in labels)


def model_overrides(label: str, lr: float | None = None, sgd: bool = False) -> tuple[str, ...]:
    """The model's overrides and its rate: Adam at its family's rate, or SGD at `SGD_LR`
    with `sgd` (`lr`: this rate instead)."""
    if sgd:
        return MODELS[label] + ("train.optimizer=sgd", f"train.lr={SGD_LR if lr is None else lr}")
    return MODELS[label] + (f"train.lr={LEARNING_RATES[family(label)] if lr is None else lr}",)


def cifar_suite(scale: CifarScale, only: tuple[str, ...], seeds: tuple[int, ...] = (0,)) -> list[RunSpec]:
    """Every CIFAR-10 run of the chosen experiments (module docstring), table by table:
    on `seeds[0]`, and E1's `E1_HEADLINE` models on the other `seeds` too."""
    runs: list[RunSpec] = []
    if "T0" in only and scale.sweep_rounds:
        runs += sweep(scale)
    wanted = set(only) | ({"E2"} if "E4" in only else set())
    for experiment, build in (("E1", _e1), ("E2", _e2), ("E3", _e3)):
        if experiment in wanted:
            for seed in seeds[:1]:
                runs += build(scale, seed, scale.base() + (f"experiment.seed={seed}",))
    if "E1" in wanted:
        for seed in seeds[1:]:
            runs += [s for s in _e1(scale, seed, scale.base() + (f"experiment.seed={seed}",)) if s.method in E1_HEADLINE]
    return runs


def sweep(scale: CifarScale) -> list[RunSpec]:
    """T0 on CIFAR-10: each family's `SWEEP_MODELS` model at every rate of `SWEEP_LRS`."""
    base = tuple(o for o in scale.base() if not o.startswith(("experiment.rounds=", "evaluation.anytime_every=")))
    common = base + (f"experiment.seed={scale.sweep_seed}", f"experiment.rounds={scale.sweep_rounds}",
                     "evaluation.anytime_every=0", tiers(scale, 1.0, 0.0), "fusion.weighting=examples")
    deq = HEADLINE["deq"]
    return [
        RunSpec(SWEEP, label, CIFAR, scale.sweep_seed, common + model_overrides(label, lr), f"lr={lr:g}",
                {"family": name})
        for name, label in SWEEP_MODELS.items() for lr in SWEEP_LRS
    ] + [
        RunSpec(SWEEP, f"{deq}-sgd", CIFAR, scale.sweep_seed, common + model_overrides(deq, lr, sgd=True), f"lr={lr:g}",
                {"family": "deq"})
        for lr in SGD_SWEEP_LRS
    ]


def _e1(scale: CifarScale, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    return [
        RunSpec("E1", label, CIFAR, seed, common + model_overrides(label) + (tiers(scale, 1.0, 0.0), "fusion.weighting=examples"),
                tags={"family": name})
        for name, labels in FAMILIES.items() for label in labels
        if scale.e1_models is None or label in scale.e1_models
    ]


def _e2(scale: CifarScale, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    deq_model, cnn_model = model_overrides(HEADLINE["deq"]), model_overrides(HEADLINE["cnn"])
    runs = []
    for fleet, (strong, weak) in FLEETS.items():
        deq = common + deq_model + (tiers(scale, strong, weak),)
        runs.append(RunSpec("E2", "deq-quality", CIFAR, seed, deq + ("fusion.weighting=quality",), fleet))
        runs.append(RunSpec("E2", "deq-fedavg", CIFAR, seed, deq + ("fusion.weighting=examples",), fleet))
        if strong > 0 and weak > 0:
            runs.append(RunSpec("E2", "deq-drop-weak", CIFAR, seed, deq + (
                "fusion.weighting=examples", "sampling.rule=drop-weak", f"sampling.min_forward_cap={STRONG_CAP}",
            ), fleet))
        runs.append(RunSpec("E2", "cnn-partial-work", CIFAR, seed, common + cnn_model + (
            tiers(scale, strong, weak, weak_fraction=0.25), "fusion.weighting=examples",
        ), fleet))
        if strong > 0 and weak > 0:
            runs.append(RunSpec("E2", "cnn-heterofl", CIFAR, seed, common + cnn_model + (
                tiers(scale, strong, weak, weak_width=HETEROFL_WIDTH), "fusion.weighting=examples",
                "fusion.aggregator=heterofl",
            ), fleet))
    return runs


def _e3(scale: CifarScale, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    return [
        RunSpec("E3", rule, CIFAR, seed, common + model_overrides(HEADLINE["deq"], sgd=rule in SGD_RULES) + (
            tiers(scale, 0.5, 0.5), f"data.alpha={alpha}",
        ) + _rule_overrides("fedavg" if rule == SGD_CONTROL else rule), f"alpha={alpha:g}")
        for alpha in E3_ALPHAS for rule in E3_RULES
        if not (alpha == E2_ALPHA and rule in E3_FROM_E2)
    ]


def sweep_section(results: list[dict[str, Any]]) -> list[str]:
    """The report's table of the CIFAR-10 sweep (as `report.section_t0` for MNIST): per
    swept model, held-back / test accuracy at each rate, the best rate by the held-back
    accuracy and the rate in use."""
    from deqfl.experiments.reproduce.report import _sweep_choice  # noqa: PLC0415 - the report imports the suite

    by_method: dict[str, dict[float, dict[str, Any]]] = defaultdict(dict)
    for run in results:
        if run["experiment"] == SWEEP:
            by_method[run["method"]][float(run["group"].removeprefix("lr="))] = run
    if not by_method:
        return []
    rates = sorted({lr for runs in by_method.values() for lr in runs})
    rows = []
    for method, runs in sorted(by_method.items()):
        cells, best = _sweep_choice(runs)
        in_use = SGD_LR if method.endswith("-sgd") else LEARNING_RATES[family(method)]
        rows.append([method, *[cells.get(lr, "n/a") for lr in rates], best, f"{in_use:g}"])
    return ["## T0 learning-rate sweep (CIFAR-10, FedAvg, homogeneous devices, one seed)",
            "", "Chosen by the clients' held-back accuracy, never by the test set; a family takes the rate of "
            "its model of about 170K parameters (docs/CIFAR_PROTOCOL.md).", "",
            *md_table(["model", *[f"lr {lr:g}: held-back / test (%)" for lr in rates], "best", "in use"], rows)]
