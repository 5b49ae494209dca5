"""The experiments of the evidence suite, as lists of runs (config overrides).

- E1 communication: DEQ vs explicit CNN, ResNet and the DEQ's unrolled twin under FedAvg
  with homogeneous devices.
- E2 heterogeneity: all strong / mixed (half at a quarter of the budget) / all weak fleets;
  DEQ with quality fusion, DEQ with FedAvg fusion, DEQ dropping the weak tier, and an
  explicit CNN whose weak devices run a quarter of the local steps.
- E3 fusion ablation: FedAvg, quality (residual, budget, loss), FedNova, FedProx under the
  mixed fleet and Dirichlet alpha 0.1, 0.5, 100.
- E4 anytime: accuracy of each E2 run's final model against the inference budget (read
  from the E2 results; no extra runs).

`--quick` is a smoke test of the pipeline (MNIST, one seed, small fleet, few rounds,
a training subset); `--full` is the evidence (MNIST and Fashion-MNIST, 3 seeds, 20
clients, 30 rounds; CIFAR-10 with `--with-cifar`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

EXPERIMENTS = ("E1", "E2", "E3", "E4")
TARGETS = {"mnist": 0.98, "fashion-mnist": 0.85, "cifar10": 0.60}
MODELS = {
    "mnist": {"deq": "deq-mnist", "cnn": "cnn-small", "resnet": "resnet-small", "unrolled": "unrolled-mnist"},
    "fashion-mnist": {"deq": "deq-mnist", "cnn": "cnn-small", "resnet": "resnet-small", "unrolled": "unrolled-mnist"},
    "cifar10": {"deq": "deq-cifar", "cnn": "cnn-large", "resnet": "resnet-large", "unrolled": "unrolled-cifar"},
}


def _tiers(strong_share: float, weak_share: float, weak_fraction: float | None = None) -> str:
    """A `fleet.tiers` override: strong (cap 16) and weak (cap 4) tiers; for explicit
    models `weak_fraction` makes weak devices run that fraction of their local steps."""
    tiers = []
    if strong_share > 0:
        tiers.append(f"{{name='strong', share={strong_share}, max_iter=16, speed=1e-5, bandwidth_mbps=100.0}}")
    if weak_share > 0:
        extra = f", step_fraction={weak_fraction}" if weak_fraction else ""
        tiers.append(
            f"{{name='weak', share={weak_share}, max_iter=4, speed=4e-5, bandwidth_mbps=10.0{extra}}}"
        )
    return "fleet.tiers=[" + ", ".join(tiers) + "]"


FLEETS = {"all-strong": (1.0, 0.0), "mixed": (0.5, 0.5), "all-weak": (0.0, 1.0)}


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
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    base: tuple[str, ...]


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
        "data.num_clients=20", "experiment.rounds=30", "sampling.fraction=0.5",
        "data.eval_subset=2000", "evaluation.anytime_every=10",
    ),
)


def build_suite(scale: SuiteScale, only: tuple[str, ...] = EXPERIMENTS, with_cifar: bool = False) -> list[RunSpec]:
    datasets = scale.datasets + (("cifar10",) if with_cifar else ())
    runs: list[RunSpec] = []
    for dataset in datasets:
        models = MODELS[dataset]
        data = (f"data.dataset={dataset}",)
        for seed in scale.seeds:
            common = scale.base + data + (f"experiment.seed={seed}",)
            if "E1" in only:
                for label, model in models.items():
                    runs.append(RunSpec("E1", label, dataset, seed, common + (
                        f"model.name={model}", "fleet.preset=homogeneous", "fusion.weighting=examples",
                    )))
            if "E2" in only or "E4" in only:
                for fleet, (strong, weak) in FLEETS.items():
                    deq = common + (f"model.name={models['deq']}", _tiers(strong, weak))
                    runs.append(RunSpec("E2", "deq-quality", dataset, seed, deq + ("fusion.weighting=quality",), fleet))
                    runs.append(RunSpec("E2", "deq-fedavg", dataset, seed, deq + ("fusion.weighting=examples",), fleet))
                    if strong > 0 and weak > 0:
                        runs.append(RunSpec("E2", "deq-drop-weak", dataset, seed, deq + (
                            "fusion.weighting=examples", "sampling.rule=drop-weak", "sampling.min_cap=16",
                        ), fleet))
                    runs.append(RunSpec("E2", "cnn-partial-work", dataset, seed, common + (
                        f"model.name={models['cnn']}", _tiers(strong, weak, weak_fraction=0.25),
                        "fusion.weighting=examples",
                    ), fleet))
            if "E3" in only:
                rules = {
                    "fedavg": ("fusion.weighting=examples",),
                    "quality-residual": ("fusion.weighting=quality", "fusion.quality=residual"),
                    "quality-budget": ("fusion.weighting=quality", "fusion.quality=budget"),
                    "quality-loss": ("fusion.weighting=quality", "fusion.quality=loss"),
                    "fednova": ("fusion.weighting=examples", "fusion.aggregator=fednova"),
                    "fedprox": ("fusion.weighting=examples", "train.proximal_mu=0.01"),
                }
                for alpha in (0.1, 0.5, 100.0):
                    for label, rule in rules.items():
                        runs.append(RunSpec("E3", label, dataset, seed, common + (
                            f"model.name={models['deq']}", _tiers(0.5, 0.5), f"data.alpha={alpha}",
                        ) + rule, f"alpha={alpha:g}"))
    return runs
