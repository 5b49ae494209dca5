"""Model options are typed per builder and validated when the config is, before any data loads."""

import pytest
from pydantic import Field
from torch import nn

from deqfl.deq import IFT, SolverConfig
from deqfl.errors import ConfigError
from deqfl.experiments.config import load_config
from deqfl.models import (
    ModelOptions,
    build_model,
    find_deq,
    model_options,
    parameter_count,
    register_model,
    validate_model_options,
)
from deqfl.models.options import DEQOptions
from deqfl.models.registry import BUILTIN_MODELS


def test_every_builtin_builder_declares_typed_options():
    for name in BUILTIN_MODELS:
        schema = model_options(name)
        assert issubclass(schema, ModelOptions)
        assert schema.model_fields, name
        assert validate_model_options(name, {}) == schema()  # defaults are valid


def test_defaults_live_in_the_options_model():
    assert model_options("deq-mnist")().channels == 16
    assert model_options("deq-cifar")().channels == 92
    assert parameter_count(build_model("deq-mnist")) == parameter_count(build_model("deq-mnist", channels=16))
    assert parameter_count(build_model("cnn-large")) == parameter_count(build_model("cnn-large", widths=[32, 64], hidden=128))


def test_the_backward_option_is_documented():
    field = DEQOptions.model_fields["backward"]
    assert "registered name" in field.description and "fleet.tiers[].backward" in field.description
    model = build_model("deq-mnist", backward="ift", backward_options={"max_iter": 12}, solver={"max_iter": 8})
    assert find_deq(model).backward == IFT(max_iter=12)
    assert find_deq(model).train_solver == SolverConfig(max_iter=8)


@pytest.mark.parametrize("name,options,message", [
    ("deq-mnist", {"channels": 0}, r"channels: Input should be greater than 0 \(got 0\)"),
    ("deq-mnist", {"chanels": 8}, r"chanels: unknown option"),
    ("deq-mnist", {"solver": {"memory": 3}}, r"solver: bad solver options"),
    ("deq-mnist", {"eval_solver": {"tol": -1}}, r"eval_solver: solver tol must be >= 0"),
    ("deq-mnist", {"backward": "adjoint"}, r"backward: unknown gradient mode 'adjoint'; use one of"),
    ("deq-mnist", {"backward": "ift", "backward_options": {"k": 2}}, r"backward_options: .*no option\(s\) \['k'\]"),
    ("deq-mnist", {"jac_reg_samples": -1}, r"jac_reg_samples"),
    ("cnn-small", {"widths": [0, 8]}, r"widths: every width must be >= 1"),
    ("cnn-small", {"widths": [8, 8, 8]}, r"widths: Tuple should have at most 2 items"),
    ("resnet-small", {"pool": 0}, r"pool: Input should be greater than 0"),
    ("unrolled-mnist", {"depth": "deep"}, r"depth: Input should be a valid integer"),
])
def test_bad_options_fail_config_validation_naming_the_option(name, options, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate_model_options(name, options)
    assert "Its options are: " + ", ".join(model_options(name).model_fields) in str(err.value)
    overrides = [f"model.name={name!r}".replace("'", '"'), f"model.options={_toml(options)}"]
    with pytest.raises(ConfigError, match=r"invalid default config:\n  model.options: model '" + name) as err:
        load_config(None, overrides)
    with pytest.raises(ConfigError, match=message):
        build_model(name, **options)


def test_an_unknown_model_fails_config_validation():
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'nope'; registered models: deq-mnist"):
        load_config(None, ['model.name="nope"'])


def test_a_user_builder_with_typed_options():
    class TinyOptions(ModelOptions):
        hidden: int = Field(4, gt=0, description="Hidden units.")

    @register_model("test-typed-linear", options=TinyOptions)
    def tiny(input_shape, num_classes, *, hidden):
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.Linear(hidden, num_classes))

    assert parameter_count(build_model("test-typed-linear", (1, 2, 2), 3, hidden="2")) == 8 + 2 + 6 + 3
    with pytest.raises(ConfigError, match=r"hidden: Input should be greater than 0 .*Its options are: hidden"):
        load_config(None, ['model.name="test-typed-linear"', "model.options={hidden=0}"])


def test_a_user_builder_without_declared_options_gets_its_signature():
    @register_model("test-untyped-linear")
    def untyped(input_shape, num_classes, hidden=4, bias=True):
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden, bias=bias), nn.Linear(hidden, num_classes))

    assert set(model_options("test-untyped-linear").model_fields) == {"hidden", "bias"}
    assert parameter_count(build_model("test-untyped-linear", (1, 2, 2), 3)) == 16 + 4 + 12 + 3
    with pytest.raises(ConfigError, match=r"width: unknown option .*Its options are: hidden, bias"):
        build_model("test-untyped-linear", (1, 2, 2), 3, width=2)


def _toml(options):
    def value(v):
        if isinstance(v, dict):
            return _toml(v)
        if isinstance(v, str):
            return f'"{v}"'
        return str(v).lower() if isinstance(v, bool) else str(v)

    return "{" + ", ".join(f"{k} = {value(v)}" for k, v in options.items()) + "}"
