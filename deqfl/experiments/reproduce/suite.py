"""The experiments of the evidence suite, as lists of runs (config overrides).

- T0 learning-rate sweep (`--full` only): each model under FedAvg, homogeneous devices,
  a short run per learning rate on MNIST with a seed no other run uses. The best rate by
  the clients' held-back accuracy (training-side data, never the test set) is what
  `LEARNING_RATES` holds for every later run; the report prints the sweep beside it.
- T1 fusion-parameter sweep (`--full` only): FedNova's server step size and FedProx's mu,
  each a short DEQ run on MNIST under the mixed fleet and Dirichlet 0.1 (where they
  matter most), chosen the same way; `FUSION_PARAMETERS` holds the choice for E3.
- E1 communication: DEQ vs explicit CNN, ResNet and the DEQ's unrolled twin under FedAvg
  with homogeneous devices.
- E2 heterogeneity: all strong (cap 8) / mixed (half at a quarter of the budget, cap 2) /
  all weak fleets;
  DEQ with quality fusion, DEQ with FedAvg fusion, DEQ dropping the weak tier, an
  explicit CNN whose weak devices run a quarter of the local steps, and (mixed fleet
  only) the CNN under HeteroFL width slicing, its weak devices training the half-width
  sub-model (about a quarter of the multiply-accumulates). An all-weak HeteroFL fleet
  would never train the full model's other half, so it is not run.
- E3 fusion ablation: FedAvg, quality (residual, budget, loss), FedNova, FedProx under the
  mixed fleet and Dirichlet alpha 0.1, 0.5, 100. At alpha 0.5 (the default partition)
  FedAvg and quality-residual are E2's mixed-fleet deq-fedavg and deq-quality runs, the
  same configuration, read from E2 rather than run twice (`E3_FROM_E2`).
- E4 anytime: accuracy of each E2 run's final model against the inference budget (read
  from the E2 results; no extra runs).
- E1F frontiers: E1's protocol at two more widths of each family (DEQ, CNN, ResNet;
  `FRONTIER_WIDTHS`), at the family's learning rate (not tuned per width). With E1's own
  width they give each family three points of accuracy against bytes (MNIST-like data
  sets only).
- E2B budgets that bind: E2 on Fashion-MNIST with a looser DEQ cell (`E2B_MAX_NORM`), whose
  solves need more iterations than E2's, under caps 16 (strong) and 4 (weak, a quarter):
  quality fusion, FedAvg and drop-weak on the mixed fleet, FedAvg on the all-strong and
  all-weak fleets, and the CNN under HeteroFL on the mixed fleet.
- E2W warm starts and correction training: E2B's looser cell on its all-strong fleet (cap
  16, where solves grow to 10-14 iterations as training goes on) with warm starts
  (`train.warm_start`), fixed-point correction training (`train.fixed_point_correction`,
  `E2W_CORRECTION`) and both; and at a quarter of the cap (4) with and without correction
  training. The plain run at cap 16 is E2B's all-strong deq-fedavg, read from E2B rather
  than run twice.

`--quick` is a smoke test of the pipeline (MNIST, one seed, small fleet, few rounds,
a training subset); `--full` is the evidence (MNIST and Fashion-MNIST, 3 seeds, 20
clients, 20 rounds). `--with-cifar` adds the CIFAR-10 protocol after them, on the first
seed (E1's headline pair on every seed; `cifar_protocol`, docs/CIFAR_PROTOCOL.md).

Runs are listed table by table: T0 and T1; then E1 and E2 (with E4) on each data set in turn;
then E3 on each data set; then E2B, E2W and E1F on each data set; every seed of a table before
the next table. A suite stopped
part-way thus has whole tables (all seeds) for the headline claims first, rather than one
seed of everything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from deqfl.errors import ConfigError
from deqfl.experiments.config import DataSection

EXPERIMENTS = ("T0", "T1", "E1", "E2", "E3", "E4", "E1F", "E2B", "E2W")
TARGETS = {"mnist": 0.98, "fashion-mnist": 0.85, "cifar10": 0.60}
MODELS = {
    "mnist": {"deq": "deq-mnist", "cnn": "cnn-small", "resnet": "resnet-small", "unrolled": "unrolled-mnist"},
    "fashion-mnist": {"deq": "deq-mnist", "cnn": "cnn-small", "resnet": "resnet-small", "unrolled": "unrolled-mnist"},
}


# Learning rates (client SGD, momentum 0.9) chosen by the T0 sweep on MNIST (best held-back
# client accuracy after 5 rounds; the report prints the sweep). Fashion-MNIST uses the same
# models and rates; CIFAR-10 has its own protocol and sweep (`cifar_protocol`).
LEARNING_RATES = {"deq-mnist": 0.1, "cnn-small": 0.03, "resnet-small": 0.01, "unrolled-mnist": 0.1}
SWEEP_LRS = (0.003, 0.01, 0.03, 0.1, 0.3)

# Fusion parameters chosen by the T1 sweep (same protocol as T0: best held-back client
# accuracy; DEQ, mixed fleet, Dirichlet 0.1, MNIST). FedNova's server step scales its
# normalised update: with local work proportional to data size, its coefficients
# tau_eff p_k / ||a_k||_1 sum to more than 1 when sizes are skewed (1.3 to 1.7 for 10 of 20
# MNIST clients at Dirichlet 0.1), so a smaller server step might do better; T1 found it
# did not. FedProx's mu weighs its proximal term.
FUSION_SWEEP = {"fednova": ("fusion.server_lr", (1.0, 0.5, 0.25)), "fedprox": ("train.proximal_mu", (0.001, 0.01, 0.1, 1.0))}
FUSION_PARAMETERS = {"fednova": 1.0, "fedprox": 0.001}
STRONG_CAP, WEAK_CAP = 8, 2  # a weak device has a quarter of the strong forward budget


def _tiers(strong_share: float, weak_share: float, weak_fraction: float | None = None,
           weak_width: float | None = None, caps: tuple[int, int] = (STRONG_CAP, WEAK_CAP)) -> str:
    """A `fleet.tiers` override: strong (cap `caps[0]`, default 8) and weak (cap `caps[1]`,
    default 2, 4x slower per unit of work, a tenth of the bandwidth) tiers; for explicit
    models `weak_fraction` makes weak devices run that fraction of their local steps
    instead, and `weak_width` train the sub-model of that width (HeteroFL)."""
    strong_cap, weak_cap = caps
    tiers = []
    if strong_share > 0:
        tiers.append(
            f"{{name='strong', share={strong_share}, max_iter={strong_cap}, speed=1e-5, bandwidth_mbps=100.0}}"
        )
    if weak_share > 0:
        extra = f", step_fraction={weak_fraction}" if weak_fraction else ""
        extra += f", width={weak_width}" if weak_width else ""
        tiers.append(
            f"{{name='weak', share={weak_share}, max_iter={weak_cap}, speed=4e-5, bandwidth_mbps=10.0{extra}}}"
        )
    return "fleet.tiers=[" + ", ".join(tiers) + "]"


FLEETS = {"all-strong": (1.0, 0.0), "mixed": (0.5, 0.5), "all-weak": (0.0, 1.0)}
HETEROFL_WIDTH = 0.5  # cnn-small at half width: 28% of the multiply-accumulates on 28x28


@dataclass(frozen=True)
class RunSpec:
    """One run of the suite: an experiment, a method label, a data set, a seed, overrides."""

    experiment: str
    method: str
    dataset: str
    seed: int
    overrides: tuple[str, ...]
    group: str = ""
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps([self.dataset, self.seed, sorted(self.overrides)]).encode())
        return f"{self.experiment}-{self.dataset}-{self.method}-{self.group or 'all'}-s{self.seed}-{digest.hexdigest()[:8]}"


@dataclass(frozen=True)
class SuiteScale:
    """How big the suite is: data sets, seeds, the overrides every run shares, and the
    learning-rate sweep (no sweep when `sweep_rounds` is 0)."""

    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    base: tuple[str, ...]
    sweep_rounds: int = 0
    sweep_seed: int = 100


QUICK = SuiteScale(
    datasets=("mnist",),
    seeds=(0,),
    base=(
        "data.num_clients=10", "experiment.rounds=3", "sampling.fraction=0.5",
        "data.train_subset=6000", "data.eval_subset=1000", "evaluation.anytime_every=0",
    ),
)
FULL = SuiteScale(
    datasets=("mnist", "fashion-mnist"),
    seeds=(0, 1, 2),
    base=(
        "data.num_clients=20", "experiment.rounds=20", "sampling.fraction=0.5",
        "data.eval_subset=2000", "evaluation.anytime_every=10",
    ),
    sweep_rounds=5,
)


def build_suite(scale: SuiteScale, only: tuple[str, ...] = EXPERIMENTS, with_cifar: bool = False,
                gpu: bool = False) -> list[RunSpec]:
    """Every run of the chosen experiments, experiment by experiment (see the module doc);
    `with_cifar`: then the CIFAR-10 protocol's runs (`cifar_protocol`, its GPU size with `gpu`)."""
    datasets = scale.datasets
    runs: list[RunSpec] = []
    if "T0" in only and scale.sweep_rounds:
        runs += _sweep(scale)
    if "T1" in only and scale.sweep_rounds:
        runs += _fusion_sweep(scale)
    builders = {"E1": _e1, "E2": _e2, "E3": _e3, "E1F": _e1f, "E2B": _e2b, "E2W": _e2w}
    wanted = set(only) | ({"E2"} if "E4" in only else set())
    for phase in (("E1", "E2"), ("E3",), ("E2B", "E2W", "E1F")):
        for dataset in datasets:
            for experiment in phase:
                if experiment not in wanted:
                    continue
                for seed in scale.seeds:
                    common = scale.base + (f"data.dataset={dataset}", f"experiment.seed={seed}")
                    runs += builders[experiment](dataset, seed, common)
    if with_cifar:
        from deqfl.experiments.reproduce.cifar_protocol import cifar_scale, cifar_suite  # noqa: PLC0415 - it imports this module

        runs += cifar_suite(cifar_scale(scale, gpu), only, scale.seeds)
    return runs


def select(specs: list[RunSpec], datasets: str | None = None, seeds: str | None = None,
           methods: str | None = None, groups: str | None = None) -> list[RunSpec]:
    """The specs whose data set is in the comma-separated `datasets`, whose seed is in
    `seeds`, whose method is in `methods` and whose group (fleet, width or swept value) is
    in `groups` (None keeps all); the sweeps T0 and T1 keep their own seed whatever `seeds`
    says. Raises ConfigError for a name, seed, method or group the suite does not have."""
    kept = specs
    for flag, wanted, attribute in (("--methods", methods, "method"), ("--groups", groups, "group")):
        if wanted is None:
            continue
        names = [m.strip() for m in wanted.split(",") if m.strip()]
        known = sorted({getattr(s, attribute) for s in specs})
        unknown = [m for m in names if m not in known]
        if unknown or not names:
            raise ConfigError(f"{flag} {wanted!r}: unknown {attribute}(s) {unknown}; the chosen experiments have {known}")
        kept = [s for s in kept if getattr(s, attribute) in names]
    if datasets is not None:
        names = [d.strip() for d in datasets.split(",") if d.strip()]
        known = sorted({s.dataset for s in specs})
        unknown = [d for d in names if d not in known]
        if unknown or not names:
            raise ConfigError(f"--datasets {datasets!r}: unknown data set(s) {unknown}; this suite has {known}")
        kept = [s for s in kept if s.dataset in names]
    if seeds is not None:
        try:
            wanted = {int(v) for v in seeds.split(",") if v.strip()}
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1") from None
        known_seeds = sorted({s.seed for s in specs if s.experiment not in ("T0", "T1")})
        unknown_seeds = sorted(wanted - set(known_seeds))
        if unknown_seeds or not wanted:
            raise ConfigError(f"--seeds {seeds!r}: unknown seed(s) {unknown_seeds}; this suite has {known_seeds}")
        kept = [s for s in kept if s.seed in wanted or s.experiment in ("T0", "T1")]
    return kept


def _model(name: str) -> tuple[str, ...]:
    return (f"model.name={name}", f"train.lr={LEARNING_RATES[name]}")


def _sweep_common(scale: SuiteScale) -> tuple[str, ...]:
    """The base overrides of a sweep run: MNIST, the sweep seed, `sweep_rounds` rounds."""
    shared = tuple(o for o in scale.base if not o.startswith(("experiment.rounds=", "evaluation.anytime_every=")))
    return shared + ("data.dataset=mnist", f"experiment.seed={scale.sweep_seed}",
                     f"experiment.rounds={scale.sweep_rounds}", "evaluation.anytime_every=0")


def _fusion_sweep(scale: SuiteScale) -> list[RunSpec]:
    deq = _sweep_common(scale) + _model(MODELS["mnist"]["deq"]) + (_tiers(0.5, 0.5), "data.alpha=0.1")
    return [
        RunSpec("T1", rule, "mnist", scale.sweep_seed,
                deq + _rule_overrides(rule, {rule: value}), f"{key.rsplit('.', 1)[1]}={value:g}")
        for rule, (key, values) in FUSION_SWEEP.items() for value in values
    ]


def _sweep(scale: SuiteScale) -> list[RunSpec]:
    common = _sweep_common(scale)
    return [
        RunSpec("T0", label, "mnist", scale.sweep_seed, common + (
            f"model.name={model}", f"train.lr={lr}", "fleet.preset=homogeneous", "fusion.weighting=examples",
        ), f"lr={lr:g}")
        for label, model in MODELS["mnist"].items() for lr in SWEEP_LRS
    ]


def _e1(dataset: str, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    return [
        RunSpec("E1", label, dataset, seed, common + _model(model) + (
            "fleet.preset=homogeneous", "fusion.weighting=examples",
        ))
        for label, model in MODELS[dataset].items()
    ]


def _e2(dataset: str, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    models = MODELS[dataset]
    runs = []
    for fleet, (strong, weak) in FLEETS.items():
        deq = common + _model(models["deq"]) + (_tiers(strong, weak),)
        runs.append(RunSpec("E2", "deq-quality", dataset, seed, deq + ("fusion.weighting=quality",), fleet))
        runs.append(RunSpec("E2", "deq-fedavg", dataset, seed, deq + ("fusion.weighting=examples",), fleet))
        if strong > 0 and weak > 0:
            runs.append(RunSpec("E2", "deq-drop-weak", dataset, seed, deq + (
                "fusion.weighting=examples", "sampling.rule=drop-weak", f"sampling.min_cap={STRONG_CAP}",
            ), fleet))
        runs.append(RunSpec("E2", "cnn-partial-work", dataset, seed, common + _model(models["cnn"]) + (
            _tiers(strong, weak, weak_fraction=0.25), "fusion.weighting=examples",
        ), fleet))
        if strong > 0 and weak > 0:
            runs.append(RunSpec("E2", "cnn-heterofl", dataset, seed, common + _model(models["cnn"]) + (
                _tiers(strong, weak, weak_width=HETEROFL_WIDTH), "fusion.weighting=examples",
                "fusion.aggregator=heterofl",
            ), fleet))
    return runs


FUSION_RULES = {
    "fedavg": ("fusion.weighting=examples",),
    "quality-residual": ("fusion.weighting=quality", "fusion.quality=residual"),
    "quality-budget": ("fusion.weighting=quality", "fusion.quality=budget"),
    "quality-loss": ("fusion.weighting=quality", "fusion.quality=loss"),
    "fednova": ("fusion.weighting=examples", "fusion.aggregator=fednova"),
    "fedprox": ("fusion.weighting=examples",),
}
E3_ALPHAS = (0.1, 0.5, 100.0)
E3_FROM_E2 = {"fedavg": "deq-fedavg", "quality-residual": "deq-quality"}
E2_ALPHA = DataSection.model_fields["alpha"].default  # E2 runs under the default partition


def _rule_overrides(rule: str, parameters: dict[str, float] = FUSION_PARAMETERS) -> tuple[str, ...]:
    """A fusion rule's overrides, with its swept parameter (if any) set from `parameters`."""
    extra = (f"{FUSION_SWEEP[rule][0]}={parameters[rule]}",) if rule in FUSION_SWEEP else ()
    return FUSION_RULES[rule] + extra


def _e3(dataset: str, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    return [
        RunSpec("E3", rule, dataset, seed, common + _model(MODELS[dataset]["deq"]) + (
            _tiers(0.5, 0.5), f"data.alpha={alpha}",
        ) + _rule_overrides(rule), f"alpha={alpha:g}")
        for alpha in E3_ALPHAS for rule in FUSION_RULES
        if not (alpha == E2_ALPHA and rule in E3_FROM_E2)
    ]


# E1F: two more widths of each family around E1's own (deq-mnist 16 channels, cnn-small
# (16, 32), resnet-small (16, 32)): a narrower and a wider model, as `model.options`.
FRONTIER_FAMILIES = ("deq", "cnn", "resnet")  # the report lists them in this order
FRONTIER_WIDTHS = {
    "deq": ({"channels": 8}, {"channels": 32}),
    "cnn": ({"widths": (8, 16)}, {"widths": (32, 64)}),
    "resnet": ({"widths": (8, 16)}, {"widths": (32, 64)}),
}
FRONTIER_DATASETS = ("mnist", "fashion-mnist")


def width_label(options: dict[str, int | tuple[int, ...]]) -> str:
    """A width's group label, e.g. `channels=8` or `widths=8-16`."""
    return ",".join(
        f"{k}={'-'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in sorted(options.items())
    )


def _options_override(options: dict[str, int | float | tuple[int, ...]]) -> str:
    """A `model.options` override in TOML, e.g. `model.options={widths=[8, 16]}`."""
    items = (f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in sorted(options.items()))
    return "model.options={" + ", ".join(items) + "}"


def _e1f(dataset: str, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    if dataset not in FRONTIER_DATASETS:
        return []
    # the narrower widths first, then the wider ones; the explicit models (the cheaper runs,
    # and the points the DEQ is placed against) before the DEQ
    order = [(family, wider) for wider in (0, 1) for family in ("cnn", "resnet", "deq")]
    return [
        RunSpec("E1F", family, dataset, seed, common + _model(MODELS[dataset][family]) + (
            _options_override(FRONTIER_WIDTHS[family][wider]), "fleet.preset=homogeneous", "fusion.weighting=examples",
        ), width_label(FRONTIER_WIDTHS[family][wider]))
        for family, wider in order
    ]


# E2B: a DEQ cell whose weight-norm bound is E2B_MAX_NORM instead of 1 (looser, so its solves
# take more iterations), under caps where the weak tier's quarter of the strong budget
# truncates them.
E2B_MAX_NORM = 4.0
E2B_CAPS = (16, 4)
E2B_DATASETS = ("fashion-mnist",)


def _e2b(dataset: str, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    if dataset not in E2B_DATASETS:
        return []
    deq = common + _model(MODELS[dataset]["deq"]) + (_options_override({"max_norm": E2B_MAX_NORM}),)
    fleet = {name: _tiers(*FLEETS[name], caps=E2B_CAPS) for name in FLEETS}
    fedavg = ("fusion.weighting=examples",)
    return [
        RunSpec("E2B", "deq-quality", dataset, seed, deq + (fleet["mixed"], "fusion.weighting=quality"), "mixed"),
        RunSpec("E2B", "deq-fedavg", dataset, seed, deq + (fleet["mixed"],) + fedavg, "mixed"),
        RunSpec("E2B", "deq-fedavg", dataset, seed, deq + (fleet["all-strong"],) + fedavg, "all-strong"),
        RunSpec("E2B", "deq-drop-weak", dataset, seed, deq + (fleet["mixed"],) + fedavg + (
            "sampling.rule=drop-weak", f"sampling.min_forward_cap={E2B_CAPS[0]}",
        ), "mixed"),
        RunSpec("E2B", "cnn-heterofl", dataset, seed, common + _model(MODELS[dataset]["cnn"]) + (
            _tiers(*FLEETS["mixed"], weak_width=HETEROFL_WIDTH, caps=E2B_CAPS), "fusion.weighting=examples",
            "fusion.aggregator=heterofl",
        ), "mixed"),
        RunSpec("E2B", "deq-fedavg", dataset, seed, deq + (fleet["all-weak"],) + fedavg, "all-weak"),
    ]


# E2W: warm starts and fixed-point correction training on E2B's cell and all-strong fleet.
E2W_CORRECTION = 1.0
"""The correction loss's weight (`train.fixed_point_correction`), at the default two
intermediate points (steps floor(cap / 3) and floor(2 cap / 3))."""
_WARM, _CORRECTION = "train.warm_start=true", f"train.fixed_point_correction={E2W_CORRECTION}"
E2W_VARIANTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "deq-warm": (E2B_CAPS[0], (_WARM,)),
    "deq-correction-cap4": (E2B_CAPS[1], (_CORRECTION,)),
    "deq-cap4": (E2B_CAPS[1], ()),
    "deq-correction": (E2B_CAPS[0], (_CORRECTION,)),
    "deq-warm-correction": (E2B_CAPS[0], (_WARM, _CORRECTION)),
    "deq-correction-w0.1-cap4": (E2B_CAPS[1], ("train.fixed_point_correction=0.1",)),
}
"""E2W's runs: (training cap, overrides). At E2B's strong cap 16: warm starts, correction
training, both; at a quarter of it (4): correction training and its plain control, i.e.
whether correction training lets the DEQ train at a quarter of the budget; and correction
at a tenth of the weight at cap 4 (added after the weight-1 run at cap 4 collapsed)."""
E2W_PLAIN = ("E2B", "deq-fedavg", "all-strong")
"""E2W's plain run at cap 16, read from E2B: (experiment, method, group)."""


def borrowed_runs(specs: list[RunSpec], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored runs of other experiments that the chosen `specs`' report sections read,
    at the chosen specs' data sets and seeds: E2's mixed-fleet runs of `E3_FROM_E2` for E3
    (the CIFAR-10 protocol's too), and E2B's plain run `E2W_PLAIN` for E2W."""
    wanted: set[tuple[str, str, str, str, int]] = set()
    for spec in specs:
        if spec.experiment == "E3":
            wanted |= {("E2", method, "mixed", spec.dataset, spec.seed) for method in E3_FROM_E2.values()}
        elif spec.experiment == "E2W":
            wanted.add((*E2W_PLAIN, spec.dataset, spec.seed))
    chosen = {spec.run_id for spec in specs}
    return [r for r in stored if r["run_id"] not in chosen
            and (r["experiment"], r["method"], r["group"], r["dataset"], r["seed"]) in wanted]


def _e2w(dataset: str, seed: int, common: tuple[str, ...]) -> list[RunSpec]:
    if dataset not in E2B_DATASETS:
        return []
    deq = common + _model(MODELS[dataset]["deq"]) + (_options_override({"max_norm": E2B_MAX_NORM}),)
    return [RunSpec("E2W", method, dataset, seed, deq + (_tiers(*FLEETS["all-strong"], caps=(cap, cap)),
                                                        "fusion.weighting=examples") + extra, "all-strong")
            for method, (cap, extra) in E2W_VARIANTS.items()]
