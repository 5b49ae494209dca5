"""E5, personalised federated learning (issue 17), as runs of the resumable store.

Each run: 100 clients (`data.num_clients`), the pathological partition at `labels`
classes per client, one personalised algorithm (`personalization.algorithm`), a tenth
of the clients held out of training as unseen clients, examples-weighted fusion of the
shared part, the default three-tier fleet (strong / medium / weak forward caps 16 / 8 / 4,
30 / 40 / 30 %) so that every round records personalised accuracy per tier. Models: the
DEQ (deq-mnist) and the explicit cnn-small at its default widths (16, 32), the
explicit model E1 found closest to the DEQ's accuracy; each at its T0 learning rate.

Order (a store stopped part-way holds the headline comparison first):
1. per label count (2, then 5): per data set (MNIST, then Fashion-MNIST), seed 0, the
   DEQ under every algorithm (`ALGORITHMS` order) and the CNN under `CNN_FIRST`; then,
   per data set, the CNN under the remaining algorithms (short runs that complete the
   label count's cells);
2. the headline comparison's further seeds (first data set, first label count): the DEQ
   under fedeq and the CNN under `CNN_FIRST`.

CIFAR-10 (`build_e5(..., cifar=scale)`, with `--with-cifar` or `--cifar-only`): one cell,
`CIFAR_LABELS` labels per client, seed 0, under the CIFAR protocol's per-run settings
(`cifar_protocol.CifarScale`: fixed local steps, Adam with a cosine rate, crop-flip
augmentation) with 100 clients, a tenth sampled a round, and its mixed fleet (strong cap 8,
weak cap 2, half each) instead of the three tiers; the models are CIFAR E1's headline
pair (`cifar_protocol.E1_HEADLINE`: the multiscale DEQ mdeq-small-8 and cnn-w32, the
explicit model E1 found closest to its accuracy, as cnn-small is on the MNIST-like sets)
at the protocol's rates, in the order above (the DEQ under every algorithm, the CNN under
`CNN_FIRST`, then the rest).

Method labels are `<model>-<algorithm>` (deq-fedeq, cnn-fedrep); the group is
`labels=<k>`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from deqfl.experiments.reproduce import cifar_protocol
from deqfl.experiments.reproduce.suite import LEARNING_RATES, STRONG_CAP, RunSpec

EXPERIMENT = "E5"
ALGORITHMS = ("fedeq", "fedrep", "fedper", "ditto", "local", "fedavg", "fedavg-ft")
CNN_FIRST = ("fedrep", "ditto")  # FeDEQ's strongest explicit baselines: the CNN's first runs
MODELS = {"deq": "deq-mnist", "cnn": "cnn-small"}
CIFAR_MODELS = dict(zip(("deq", "cnn"), cifar_protocol.E1_HEADLINE))
UNSEEN_FRACTION = 0.1
CIFAR_LABELS = 5
# Target mean personalised accuracy (per data set and labels per client) for "MB to target";
# CIFAR-10's was set before any CIFAR-10 E5 run.
TARGETS = {("mnist", 2): 0.97, ("mnist", 5): 0.95, ("fashion-mnist", 2): 0.92, ("fashion-mnist", 5): 0.85,
           (cifar_protocol.CIFAR, CIFAR_LABELS): 0.70}
STEP_MODELS: dict[str, tuple[str, dict[str, object], tuple[int, int, int]]] = {
    MODELS["deq"]: (MODELS["deq"], {}, (1, 28, 28)),
    MODELS["cnn"]: (MODELS["cnn"], {}, (1, 28, 28)),
    CIFAR_MODELS["deq"]: ("mdeq-small-8", {}, (3, 32, 32)),
    CIFAR_MODELS["cnn"]: ("cnn-small", {"widths": [32, 64]}, (3, 32, 32)),
}
"""Every model E5 runs, by its label in the report: (registered name, options, input shape)
for the peak memory of its training step (`step_memory.step_peak_bytes`)."""


def model_label(dataset: str, model: str) -> str:
    """The label of `model` ("deq" or "cnn") on `dataset`: the MNIST-like models, or the
    CIFAR-10 pair."""
    return CIFAR_MODELS[model] if dataset == cifar_protocol.CIFAR else MODELS[model]


@dataclass(frozen=True)
class PersonalScale:
    """How big E5 is: data sets, labels per client, the seed of every cell, the headline
    comparison's further seeds, and the overrides every run shares."""

    datasets: tuple[str, ...]
    labels: tuple[int, ...]
    seed: int
    headline_seeds: tuple[int, ...]
    base: tuple[str, ...]


FULL = PersonalScale(
    datasets=("mnist", "fashion-mnist"),
    labels=(2, 5),
    seed=0,
    headline_seeds=(1, 2),
    base=(
        "data.num_clients=100", "experiment.rounds=15", "sampling.fraction=0.1",
        "data.eval_subset=1000", "evaluation.anytime_every=0", "evaluation.anytime_forward_caps=[16]",
        "fusion.weighting=examples", "fleet.preset=three-tiers",
        "data.partition=pathological", f"personalization.unseen_fraction={UNSEEN_FRACTION}",
    ),
)
QUICK = PersonalScale(
    datasets=("mnist",),
    labels=(2,),
    seed=0,
    headline_seeds=(),
    base=(
        "data.num_clients=20", "experiment.rounds=2", "sampling.fraction=0.5",
        "data.train_subset=6000", "data.eval_subset=500", "evaluation.anytime_every=0",
        "evaluation.anytime_forward_caps=[16]", "fusion.weighting=examples", "fleet.preset=three-tiers",
        "data.partition=pathological", f"personalization.unseen_fraction={UNSEEN_FRACTION}",
    ),
)


def run(scale: PersonalScale, dataset: str, labels: int, seed: int, model: str, algorithm: str) -> RunSpec:
    """One E5 run: `model` ("deq" or "cnn") under `algorithm` on one cell."""
    name = MODELS[model]
    overrides = scale.base + (
        f"data.dataset={dataset}", f"experiment.seed={seed}", f"data.classes_per_client={labels}",
        f"model.name={name}", f"train.lr={LEARNING_RATES[name]}", f"personalization.algorithm={algorithm}",
    )
    return RunSpec(EXPERIMENT, f"{model}-{algorithm}", dataset, seed, overrides, f"labels={labels}")


def cifar_runs(scale: cifar_protocol.CifarScale, seed: int = 0) -> list[RunSpec]:
    """E5's CIFAR-10 cell under the CIFAR protocol's `scale` (module docstring)."""
    sized = dataclasses.replace(scale, num_clients=100, fraction=0.1)
    base = tuple(o for o in sized.base() if not o.startswith("evaluation.anytime_every=")) + (
        "evaluation.anytime_every=0", f"evaluation.anytime_forward_caps=[{STRONG_CAP}]", f"experiment.seed={seed}",
        "data.partition=pathological", f"data.classes_per_client={CIFAR_LABELS}",
        f"personalization.unseen_fraction={UNSEEN_FRACTION}", "fusion.weighting=examples",
        cifar_protocol.tiers(sized, 0.5, 0.5),
    )

    def one(model: str, algorithm: str) -> RunSpec:
        overrides = base + cifar_protocol.model_overrides(CIFAR_MODELS[model]) + (
            f"personalization.algorithm={algorithm}",)
        return RunSpec(EXPERIMENT, f"{model}-{algorithm}", cifar_protocol.CIFAR, seed, overrides, f"labels={CIFAR_LABELS}")

    return ([one("deq", a) for a in ALGORITHMS] + [one("cnn", a) for a in CNN_FIRST]
            + [one("cnn", a) for a in ALGORITHMS if a not in CNN_FIRST])


def build_e5(scale: PersonalScale = FULL, cifar: cifar_protocol.CifarScale | None = None) -> list[RunSpec]:
    """Every E5 run, in the order of the module docstring; with `cifar`, the CIFAR-10 cell
    at that size last."""
    runs = []
    for labels in scale.labels:
        for dataset in scale.datasets:
            runs += [run(scale, dataset, labels, scale.seed, "deq", a) for a in ALGORITHMS]
            runs += [run(scale, dataset, labels, scale.seed, "cnn", a) for a in CNN_FIRST]
        for dataset in scale.datasets:
            runs += [run(scale, dataset, labels, scale.seed, "cnn", a) for a in ALGORITHMS if a not in CNN_FIRST]
    dataset, labels = scale.datasets[0], scale.labels[0]
    for seed in scale.headline_seeds:
        runs.append(run(scale, dataset, labels, seed, "deq", "fedeq"))
        runs += [run(scale, dataset, labels, seed, "cnn", a) for a in CNN_FIRST]
    return runs + (cifar_runs(cifar) if cifar is not None else [])
