"""Property: any config values go through validation and then a one-round run; nothing
raises but a clear deqfl error (DeqflError, a message without traceback), and a run that
reports success has written its model and summary."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deqfl.errors import DeqflError, RunFailed
from deqfl.experiments.config import load_config
from deqfl.experiments.runner import run_experiment

BASE = [
    "data.dataset=digits", "data.train_subset=600", "data.num_clients=4", "data.eval_subset=60", "experiment.rounds=1",
    "experiment.workers=1", "evaluation.anytime_every=0", "evaluation.anytime_forward_caps=[2]",
    "train.residual_samples=16", "model.name=cnn-small",
]
EDGE = ["0", "-1", "inf", "nan", "1e308", "'x'", "[]"]
PLAUSIBLE = {
    "data.num_clients": ["1", "2", "3", "7", "60", "300"],
    "data.holdout_fraction": ["0.0", "0.5", "0.9", "0.99"],
    "data.alpha": ["0.01", "0.1", "100.0"],
    "data.partition": ["'iid'", "'pathological'", "'shards'", "'quantity-skew'"],
    "data.classes_per_client": ["1", "10", "11"],
    "train.lr": ["1e-6", "0.5", "10.0"],
    "train.momentum": ["0.0", "0.99"],
    "train.weight_decay": ["0.0", "1.0"],
    "train.batch_size": ["1", "1000"],
    "train.proximal_mu": ["0.0", "10.0"],
    "train.optimizer": ["'adam'", "'adamw'"],
    "train.optimizer_options": ["{beta_1 = 0.5}", "{eps = 1e-3}"],
    "train.lr_schedule": ["'cosine'", "'step'"],
    "train.lr_warmup_rounds": ["1"],
    "data.augment": ["'crop-flip'"],
    "sampling.fraction": ["0.01", "1.0"],
    "sampling.min_clients": ["1", "50"],
    "sampling.deadline_seconds": ["1e-9", "1e9"],
    "fusion.server_lr": ["0.01", "5.0"],
    "fusion.trim_fraction": ["0.0", "0.49"],
    "fusion.min_updates": ["1", "99"],
    "fusion.aggregator": ["'median'", "'trimmed-mean'", "'krum'", "'multi-krum'", "'fednova'"],
    "fusion.server_optimizer": ["'fedadam'", "'fedyogi'", "'fedavgm'", "'fedadagrad'"],
    "evaluation.batch_size": ["1", "7"],
    "transport.dtype": ["'float16'"],
    "experiment.seed": ["1", "9223372036854775807"],
    "faults.crash_probability": ["0.5", "1.0"],
    "attack.kind": ["'sign-flip'", "'inject-nan'", "'label-flip'"],
    "privacy.mode": ["'central'", "'local'"],
}
items = st.sampled_from(sorted(PLAUSIBLE)).flatmap(
    lambda key: st.tuples(st.just(key), st.sampled_from(PLAUSIBLE[key]) | st.sampled_from(EDGE))
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(items, min_size=1, max_size=3, unique_by=lambda kv: kv[0]))
def test_any_values_give_a_clear_error_or_a_finished_run(tmp_path_factory, items):
    out = tmp_path_factory.mktemp("run")
    overrides = BASE + [f"data.cache_dir={json.dumps(str(out.parent / 'cache'))}"]
    overrides += [f"{key}={value}" for key, value in items]
    try:
        config = load_config(None, overrides)
        summary = run_experiment(config, out / "run")
    except DeqflError as exc:
        event(f"refused: {type(exc).__name__}")
        assert not isinstance(exc, RunFailed), f"a bug, not a refusal: {exc}"
        assert str(exc) and "Traceback" not in str(exc)
        return
    event("ran")
    assert (out / "run" / "model.safetensors").exists() and (out / "run" / "summary.json").exists()
    assert 0.0 <= summary["final_accuracy"] <= 1.0
