"""`experiment.device` (issue 15, item 1): names checked, CUDA without CUDA a clear error,
and every tensor a round creates placed on the run's device.

Without a GPU, placement is checked with torch's default device: under
`with torch.device("meta")` every tensor created without an explicit device (or a tensor
it is made like) lands on `meta`, which holds no data, so the run fails the moment such a
tensor meets a real one or is read. A run with `experiment.device = "cpu"` that places
everything itself finishes there with the very results it gives outside the context.
Tests marked `gpu` run the same checks on CUDA (scripts/gpu_check.sh) and skip elsewhere.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from deqfl.cli.main import main
from deqfl.devices import check_device_name, module_device, prepare_device, resolve_device
from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.run_dir import run_config_hash
from deqfl.experiments.runner import run_experiment
from deqfl.fl.transport import decode_state, encode_state

CUDA = torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(CUDA, reason="checks the behaviour of a machine without CUDA")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (scripts/gpu_check.sh)")

TINY = [
    "data.dataset=digits", "data.num_clients=4", "data.alpha=1.0", "data.eval_subset=0",
    "experiment.rounds=1", "experiment.threads=1", "experiment.workers=1", "sampling.fraction=1.0",
    "train.batch_size=16", "evaluation.anytime_every=1", "evaluation.anytime_budgets=[1, 4]",
]
HALF_WIDTH = "fleet.tiers=[{name='strong', share=0.5}, {name='weak', share=0.5, width=0.5}]"
SCENARIOS = {
    "fedavg": [],
    "central-dp-fedadam": ["privacy.mode=central", "privacy.clip_norm=1.0", "privacy.noise_multiplier=0.5",
                           "fusion.weighting=uniform", "fusion.server_optimizer=fedadam"],
    "local-dp-gaussian-median": ["privacy.mode=local", "privacy.clip_norm=1.0", "privacy.noise_multiplier=0.1",
                                 "fusion.weighting=uniform", "fusion.aggregator=median",
                                 "attack.kind=gaussian", "attack.clients=[1]"],
    "inject-inf-trimmed-mean": ["attack.kind=inject-inf", "attack.clients=[0]", "fusion.aggregator=trimmed-mean"],
    "label-flip-multi-krum": ["attack.kind=label-flip", "attack.clients=[0]", "fusion.aggregator=multi-krum"],
    "jacobian-unrolled-ift-krum": [
        "model.options={jac_reg_samples=1}",
        "fleet.tiers=[{name='a', share=0.5, backward='unrolled'}, {name='b', share=0.5, backward='ift'}]",
        "attack.kind=inject-nan", "attack.clients=[0]", "fusion.aggregator=krum",
    ],
    "scaffold-fedavgm": ["experiment.rounds=2", "fusion.control_variates=scaffold", "fusion.server_optimizer=fedavgm"],
    "heterofl-width": ["model.name=cnn-small", HALF_WIDTH, "fusion.weighting=examples", "fusion.aggregator=heterofl"],
}
MEASURED = {"wall_seconds", "train_seconds", "eval_seconds", "compute_seconds", "commit", "versions"}


def _config(tmp_path, extra):
    cache = f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"
    return load_config(None, TINY + list(extra) + [cache])


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _result(out, summary):
    return _strip(summary), _strip(read_jsonl(out / "metrics.jsonl")), load_file(str(out / "model.safetensors"))


def _same_model(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_are_accepted(name):
    assert load_config(None, [f"experiment.device={name}"]).experiment.device == name


@pytest.mark.parametrize("name", ["gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "mps", "cpu:0", ""])
def test_a_malformed_device_fails_when_the_config_is_read(name):
    with pytest.raises(ConfigError, match=r"experiment\.device: .*auto, cpu, cuda or cuda:N"):
        load_config(None, [f"experiment.device='{name}'"])
    with pytest.raises(ValueError):
        check_device_name(name)


@needs_no_cuda
def test_auto_is_the_cpu_without_cuda():
    assert resolve_device("auto") == torch.device("cpu") == prepare_device("auto")
    assert load_config(None, []).experiment.device == "auto"


@needs_no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error_before_any_data_loads(tmp_path, name):
    # a data folder that does not exist: loading data first would fail differently
    config = _config(tmp_path, [f"experiment.device={name}", "data.dataset=mnist", "data.data_dir='/nonexistent'"])
    expected = (f"experiment.device = '{name}' but torch.cuda.is_available() is False "
                f"(this torch is {torch.__version__}, a CPU build?): install a CUDA build of torch")
    with pytest.raises(ConfigError) as caught:
        run_experiment(config, tmp_path / "run")
    assert str(caught.value).startswith(expected)
    assert "experiment.device = 'cpu'" in str(caught.value)
    assert not (tmp_path / "run").exists()


@needs_no_cuda
def test_cli_reports_cuda_without_cuda_without_traceback(tmp_path, capsys):
    assert main(["run", "--set", "experiment.device=cuda", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "torch.cuda.is_available() is False" in err and "Traceback" not in err


def test_decode_places_tensors_on_the_device_of_like():
    state = {"w": torch.randn(3, 2, device="cpu"), "steps": torch.tensor([4], device="cpu")}
    like = {"w": torch.empty(3, 2, dtype=torch.float64, device="meta"), "steps": torch.empty(1, dtype=torch.int64, device="meta")}
    decoded = decode_state(encode_state(state, "float16"), like=like)
    assert decoded["w"].device.type == "meta" and decoded["w"].dtype == torch.float64
    assert decoded["steps"].device.type == "meta"
    assert decode_state(encode_state(state))["w"].device.type == "cpu"  # no like: as received, on the host


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_tensor_of_a_round_is_placed_on_the_run_device(tmp_path, scenario):
    """Under a `meta` default device a run on device=cpu gives exactly the results it gives
    without one: no tensor was created on the default device (module docstring)."""
    config = _config(tmp_path, ["experiment.device=cpu", *SCENARIOS[scenario]])
    plain = _result(tmp_path / "plain", run_experiment(config, tmp_path / "plain"))
    with torch.device("meta"):
        summary = run_experiment(config, tmp_path / "meta")
    placed = _result(tmp_path / "meta", summary)
    assert summary["device"] == "cpu"
    assert placed[0] == plain[0] and placed[1] == plain[1]
    _same_model(placed[2], plain[2])
    assert not placed[1][0].get("skipped", False)


def test_device_is_not_part_of_the_run_identity_and_a_run_resumes_on_another_device(tmp_path):
    """A run checkpointed on one device resumes on another (here cpu -> auto, both the CPU
    without CUDA), loading its checkpoint back onto the device, under a meta default."""
    two = ["experiment.rounds=2", "fusion.weighting=uniform", "fusion.server_optimizer=fedadam",
           "fusion.control_variates=scaffold"]
    on_cpu, on_auto = _config(tmp_path, [*two, "experiment.device=cpu"]), _config(tmp_path, [*two, "experiment.device=auto"])
    assert run_config_hash(on_cpu) == run_config_hash(on_auto)
    straight = _result(tmp_path / "straight", run_experiment(on_auto, tmp_path / "straight"))
    with torch.device("meta"):
        run_experiment(on_cpu, tmp_path / "moved", stop_after=1)
        resumed = run_experiment(on_auto, tmp_path / "moved", resume=True)
    assert _result(tmp_path / "moved", resumed)[1] == straight[1]
    _same_model(_result(tmp_path / "moved", resumed)[2], straight[2])


def test_worker_and_flower_node_models_are_built_on_the_run_device(tmp_path):
    """The pool's workers rebuild the model from a `ModelSpec`, a Flower node from the run's
    config: both on the named device, with the run's initial values, whatever the default."""
    from deqfl.engines.spec import ModelSpec  # noqa: PLC0415
    from deqfl.experiments.flower_app import load_node  # noqa: PLC0415 - needs flwr

    spec = ModelSpec("deq-mnist", (1, 8, 8), 10, {}, seed=3, device="cpu")
    plain = spec.build()
    with torch.device("meta"):
        placed = spec.build()
        node = load_node(_config(tmp_path, ["experiment.device=cpu"]).to_toml(), None)
    assert module_device(placed) == module_device(node.model) == torch.device("cpu")
    _same_model(plain.state_dict(), placed.state_dict())
    if not CUDA:
        with pytest.raises(ConfigError, match="torch.cuda.is_available"):
            ModelSpec("deq-mnist", (1, 8, 8), 10, {}, device="cuda").build()


def test_flower_simulation_reserves_no_gpu_on_the_cpu():
    from deqfl.experiments.flower_app import flower_run  # noqa: PLC0415 - needs flwr

    config = load_config(None, ["experiment.device=cpu", "flower.client_gpus=0.5"])
    assert flower_run(config).client_gpus == 0.0
    with pytest.raises(ConfigError, match=r"flower\.client_gpus"):
        load_config(None, ["flower.client_gpus=1.5"])


# --- on a CUDA machine (scripts/gpu_check.sh) ---


@gpu
@needs_cuda
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_cuda_run_is_repeatable_and_learns(tmp_path, scenario):
    """The same run twice on CUDA: bitwise the same model and records (deterministic
    algorithms, TF32 off); no round skipped; every client's reply accepted."""
    config = _config(tmp_path, ["experiment.device=cuda", *SCENARIOS[scenario]])
    first = _result(tmp_path / "a", run_experiment(config, tmp_path / "a"))
    second = _result(tmp_path / "b", run_experiment(config, tmp_path / "b"))
    assert first[0]["device"].startswith("cuda:")
    assert first[0] == second[0] and first[1] == second[1]
    _same_model(first[2], second[2])
    assert not first[1][0].get("skipped", False)
    assert all(torch.isfinite(v).all() for v in first[2].values() if v.is_floating_point())


@gpu
@needs_cuda
def test_cuda_workers_match_one_worker_bitwise(tmp_path):
    one = _config(tmp_path, ["experiment.device=cuda", "experiment.rounds=2"])
    two = _config(tmp_path, ["experiment.device=cuda", "experiment.rounds=2", "experiment.workers=2"])
    a = _result(tmp_path / "one", run_experiment(one, tmp_path / "one"))
    b = _result(tmp_path / "two", run_experiment(two, tmp_path / "two"))
    assert a[1] == b[1]
    _same_model(a[2], b[2])


@gpu
@needs_cuda
def test_cuda_run_resumes_on_the_cpu(tmp_path):
    """Checkpoints hold CPU tensors: a run checkpointed on CUDA resumes on the CPU."""
    two = ["experiment.rounds=2"]
    run_experiment(_config(tmp_path, [*two, "experiment.device=cuda"]), tmp_path / "run", stop_after=1)
    summary = run_experiment(_config(tmp_path, [*two, "experiment.device=cpu"]), tmp_path / "run", resume=True)
    assert summary["device"] == "cpu" and summary["final_accuracy"] > 0.3


@gpu
@needs_cuda
def test_cuda_names_resolve_with_an_index():
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", torch.cuda.current_device())
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"torch sees {count} CUDA device"):
        resolve_device(f"cuda:{count}")
    model = torch.nn.Linear(2, 2).to(prepare_device("cuda"))
    assert module_device(model).type == "cuda"
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.allow_tf32


def test_the_heads_pool_keeps_torchs_kernel_on_the_cpu_and_its_matmul_form_agrees():
    from deqfl.models.stems import AdaptiveAvgPool, adaptive_avg_pool_by_matmul  # noqa: PLC0415

    for shape, size in [((2, 3, 14, 14), (4, 4)), ((2, 3, 8, 8), (4, 4)), ((1, 2, 13, 9), (4, 3))]:
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        assert torch.equal(AdaptiveAvgPool(size)(x), torch.nn.AdaptiveAvgPool2d(size)(x))
        torch_pool, matmul_pool = torch.nn.functional.adaptive_avg_pool2d(x, size), adaptive_avg_pool_by_matmul(x, size)
        grad = torch.randn_like(torch_pool)
        (want,), (got,) = (torch.autograd.grad(y, x, grad) for y in (torch_pool, matmul_pool))
        assert torch.allclose(matmul_pool, torch_pool, atol=1e-12) and torch.allclose(got, want, atol=1e-12)


@gpu
@needs_cuda
def test_the_heads_pool_is_bitwise_repeatable_on_cuda():
    from deqfl.models.stems import AdaptiveAvgPool  # noqa: PLC0415

    prepare_device("cuda")
    x = torch.randn(64, 16, 14, 14, device="cuda", requires_grad=True)
    grads = []
    for _ in range(3):
        (g,) = torch.autograd.grad(AdaptiveAvgPool(4)(x).square().sum(), x)
        grads.append(g)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    cpu = torch.nn.functional.adaptive_avg_pool2d(x.detach().cpu().requires_grad_(), 4)
    assert torch.allclose(AdaptiveAvgPool(4)(x).cpu(), cpu, atol=1e-5)


@gpu
@needs_cuda
def test_flower_simulation_reserves_a_gpu_share_on_cuda():
    pytest.importorskip("flwr")
    from deqfl.experiments.flower_app import flower_run  # noqa: PLC0415

    assert flower_run(load_config(None, ["experiment.device=cuda", "flower.client_gpus=0.5"])).client_gpus == 0.5
    assert flower_run(load_config(None, ["experiment.device=cpu"])).client_gpus == 0.0
