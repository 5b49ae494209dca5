"""Property-based tests (hypothesis): no client input makes fusion raise, weights are
finite and sum to 1, rejected updates never change the model, arrival order does not
matter, and config parsing fails only with ConfigError."""

from __future__ import annotations

import dataclasses
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deqfl.errors import ConfigError
from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig, FusionContext

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SHAPES = {"a": ((2, 3), torch.float32), "b": ((4,), torch.float64), "n": ((), torch.int64)}


def global_state() -> dict[str, torch.Tensor]:
    return {
        "a": torch.linspace(-1, 1, 6).reshape(2, 3),
        "b": torch.arange(4, dtype=torch.float64),
        "n": torch.tensor(3),
    }


junk = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def tensors(draw, key: str, huge: bool) -> torch.Tensor:
    shape, dtype = SHAPES[key]
    size = math.prod(shape)
    if dtype == torch.int64:
        return torch.tensor(draw(st.integers(-9, 9)))
    width = 32 if dtype == torch.float32 else 64
    if huge:  # any finite value: sums may overflow, fusion must then skip, not raise
        values = st.floats(allow_nan=False, allow_infinity=False, width=width)
    else:
        values = st.floats(-1e3, 1e3, width=width)
    drawn = draw(st.lists(values, min_size=size, max_size=size))
    return torch.tensor(drawn, dtype=dtype).reshape(shape)


@st.composite
def valid_updates(draw, client: int, huge: bool = False) -> ClientUpdate:
    return ClientUpdate(
        client_id=client,
        tier=draw(st.sampled_from(["weak", "strong"])),
        state={key: draw(tensors(key, huge)) for key in SHAPES},
        num_examples=draw(st.integers(-10, 10**6)),
        local_steps=draw(st.integers(1, 30)),
        forward_cap=draw(st.integers(0, 64)),
        residual=draw(st.none() | st.floats(0, math.inf)),
        holdout_loss=draw(st.none() | st.floats(0, 1e6)),
        momentum=draw(st.floats(0, 0.99)),
    )


@st.composite
def invalid_updates(draw, client: int) -> object:
    """An update that validation must reject (structurally or by its fields)."""
    base = draw(valid_updates(client))
    state = dict(base.state)
    key = draw(st.sampled_from(["a", "b"]))
    kind = draw(st.sampled_from(
        ["nan", "inf", "shape", "dtype", "missing", "extra", "not-tensor", "state",
         "field", "not-update"]
    ))
    if kind in ("nan", "inf"):
        value = state[key].clone()
        value.view(-1)[draw(st.integers(0, value.numel() - 1))] = (
            float("nan") if kind == "nan" else draw(st.sampled_from([math.inf, -math.inf]))
        )
        state[key] = value
    elif kind == "shape":
        state[key] = torch.zeros(draw(st.integers(1, 5)), 7, dtype=state[key].dtype)
    elif kind == "dtype":
        wrong = st.sampled_from([torch.float16, torch.int32, torch.bfloat16])
        state[key] = state[key].to(draw(wrong))
    elif kind == "missing":
        del state[key]
    elif kind == "extra":
        state["c"] = torch.zeros(1)
    elif kind == "not-tensor":
        state[key] = draw(junk)
    elif kind == "state":
        return dataclasses.replace(base, state=draw(junk | st.just({})))
    elif kind == "field":
        name, bad = draw(st.sampled_from([
            ("num_examples", st.text(max_size=2) | st.floats() | st.none()),
            ("local_steps", st.integers(-5, 0) | st.floats() | st.none()),
            ("forward_cap", st.integers(-5, -1) | st.text(max_size=2)),
            ("residual", st.floats(max_value=-1e-9) | st.just(math.nan) | st.text(max_size=2)),
            ("holdout_loss", st.just(math.nan) | st.just(math.inf) | st.floats(max_value=-1e-9)),
            ("momentum", st.floats(min_value=1.0) | st.floats(max_value=-1e-9) | st.just(math.nan)),
            ("metrics", st.lists(st.integers(), max_size=2) | st.text(max_size=2)),
        ]))
        return dataclasses.replace(base, **{name: draw(bad)})
    else:
        return draw(junk)
    return dataclasses.replace(base, state=state)


configs = st.builds(
    FusionConfig,
    weighting=st.sampled_from(["examples", "uniform", "quality"]),
    quality=st.sampled_from(["residual", "budget", "loss"]),
    aggregator=st.sampled_from(["mean", "fednova", "median", "trimmed-mean", "krum", "multi-krum"]),
    server_lr=st.floats(0.1, 2.0),
    max_norm_factor=st.sampled_from([None, 1.0, 3.0, 10.0]),
    min_updates=st.integers(1, 3),
    trim_fraction=st.floats(0, 0.49),
    krum_byzantine=st.integers(0, 3),
    krum_select=st.none() | st.integers(1, 5),
)

contexts = st.builds(
    FusionContext,
    round=st.integers(0, 100),
    reference_cap=st.integers(0, 32),
    known_num_examples=st.dictionaries(st.integers(0, 10), st.integers(0, 10**4), max_size=5),
)


def mixed_round(draw) -> list[object]:
    ids = draw(st.lists(st.integers(0, 10), max_size=6))
    updates: list[object] = []
    for client in ids:
        kind = draw(st.sampled_from(["valid", "huge", "invalid"]))
        if kind == "invalid":
            updates.append(draw(invalid_updates(client)))
        else:
            updates.append(draw(valid_updates(client, huge=kind == "huge")))
    return updates


@SETTINGS
@given(st.data(), configs, contexts)
def test_fuse_never_raises_and_its_output_is_sound(data, config, ctx):
    g = global_state()
    before = {k: v.clone() for k, v in g.items()}
    updates = mixed_round(data.draw)
    result = Fusion(config).fuse(g, updates, ctx)

    assert len(result.accepted) + len(result.rejected) == len(updates)
    assert all(isinstance(r["reason"], str) and r["reason"] for r in result.rejected)
    for key in g:
        assert torch.equal(g[key], before[key])
        assert result.state[key].dtype == g[key].dtype and result.state[key].shape == g[key].shape
    if result.skipped:
        assert all(result.state[k] is g[k] for k in g)
        return
    assert list(result.weights) == result.accepted == sorted(result.accepted)
    shares = list(result.weights.values())
    assert all(math.isfinite(w) and w >= 0 for w in shares)
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-9)
    assert all(math.isfinite(q) and q >= 0 for q in result.quality.values())
    assert all(bool(torch.isfinite(v).all()) for v in result.state.values())
    assert torch.equal(result.state["n"], g["n"])


@SETTINGS
@given(st.data(), configs, contexts)
def test_rejected_updates_never_change_the_model(data, config, ctx):
    g = global_state()
    valid = [data.draw(valid_updates(c)) for c in data.draw(st.sets(st.integers(0, 9), max_size=5))]
    bad = [data.draw(invalid_updates(c)) for c in range(100, 100 + data.draw(st.integers(1, 4)))]
    mixed = data.draw(st.permutations(valid + bad))
    fusion = Fusion(config)
    clean, dirty = fusion.fuse(g, valid, ctx), fusion.fuse(g, mixed, ctx)
    assert dirty.skipped == clean.skipped
    assert dirty.accepted == clean.accepted
    assert dirty.weights == clean.weights
    assert len(dirty.rejected) == len(clean.rejected) + len(bad)
    for key in g:
        assert torch.equal(dirty.state[key], clean.state[key])


@SETTINGS
@given(st.data(), configs, contexts)
def test_result_is_independent_of_arrival_order(data, config, ctx):
    g = global_state()
    valid = [data.draw(valid_updates(c)) for c in data.draw(st.sets(st.integers(0, 9), max_size=5))]
    shuffled = data.draw(st.permutations(valid))
    first, second = Fusion(config).fuse(g, valid, ctx), Fusion(config).fuse(g, shuffled, ctx)
    assert first.weights == second.weights and first.skipped == second.skipped
    for key in g:
        assert torch.equal(first.state[key], second.state[key])


FIELDS = sorted(FusionConfig.model_fields)


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), junk, max_size=4))
def test_config_parsing_fails_only_with_config_error(data):
    try:
        config = FusionConfig.from_mapping(data)
    except ConfigError as exc:
        assert str(exc).startswith("invalid fusion config")
    else:
        assert config.residual_floor < config.residual_cap
        Fusion(config)
