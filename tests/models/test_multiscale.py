"""The multiscale DEQ cell and its models: packing, sizes, the solver contract, training,
the unrolled twin, export, anytime evaluation and HeteroFL's refusal."""

import pytest
import torch

from deqfl.deq import SolverConfig, solve
from deqfl.errors import ConfigError
from deqfl.experiments.export import fixed_budget_model
from deqfl.models import accuracy_at_budgets, build_model, find_deq, parameter_count
from deqfl.models.cells import MultiscaleCell, cell_names
from deqfl.models.cells.multiscale import Branches
from deqfl.models.width import narrow_model

SIZES = {  # exact parameter counts on 3x32x32, 10 classes
    "mdeq-tiny-16": 61_856, "mdeq-tiny-8": 65_516,
    "mdeq-small": 177_239, "mdeq-small-16": 177_239, "mdeq-small-8": 171_911,
    "mdeq-large-16": 270_903, "mdeq-large-8": 264_963,
    "unrolled-mdeq-tiny-16": 194_594, "unrolled-mdeq-small-16": 583_358, "unrolled-mdeq-large-16": 905_022,
}
SOLVE_SIDE = {"mdeq-small": 32, "mdeq-tiny-16": 16, "mdeq-small-16": 16, "mdeq-large-16": 16,
              "mdeq-tiny-8": 8, "mdeq-small-8": 8, "mdeq-large-8": 8}


def _images(n, shape=(3, 32, 32), seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def test_both_cells_are_registered():
    assert {"residual", "multiscale"} <= set(cell_names())


def test_pack_and_unpack_are_inverse_channels_last_views():
    geometry = Branches.geometry(4, 3, (7, 6))
    assert geometry.widths == (4, 8, 16) and geometry.sides == ((7, 6), (4, 3), (2, 2))
    flat = torch.randn(2, sum(geometry.sizes))
    parts = geometry.unpack(flat)
    assert [tuple(p.shape) for p in parts] == [(2, 4, 7, 6), (2, 8, 4, 3), (2, 16, 2, 2)]
    assert all(p.stride()[1:] == (1, p.shape[3] * p.shape[1], p.shape[1]) for p in parts)  # (H, W, C) order
    assert all(p.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr() for p in parts)  # views
    assert torch.equal(geometry.pack(parts), flat)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_exact_sizes_and_output_shapes(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert parameter_count(model) == SIZES[name]
    out = model(_images(2))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())
    assert (find_deq(model) is not None) == name.startswith("mdeq")
    if name in SOLVE_SIDE:
        assert find_deq(model).cell.branches.sides[0] == (SOLVE_SIDE[name],) * 2


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 15, 17)])
def test_any_input_shape(shape):
    model = build_model("mdeq-small-8", shape, 7, channels=4).eval()
    assert model(_images(2, shape)).shape == (2, 7)


def test_unrolled_twin_holds_depth_cells():
    twin, deq = build_model("unrolled-mdeq-tiny-16"), build_model("mdeq-tiny-16")
    cell = sum(p.numel() for p in find_deq(deq).cell.parameters())
    assert len(twin.cells) == 4 and parameter_count(twin) == parameter_count(deq) + 3 * cell


def test_options_select_merge_and_refuse():
    model = build_model("mdeq-tiny-16", cell_options={"pool": 2})  # merged over the model's own options
    assert find_deq(model).cell.branches.sides == ((16, 16), (8, 8))
    assert isinstance(find_deq(build_model("deq-cifar", channels=4, cell="multiscale")).cell, MultiscaleCell)
    assert not isinstance(find_deq(build_model("mdeq-tiny-16", cell="residual")).cell, MultiscaleCell)
    with pytest.raises(ConfigError, match="unknown cell 'hexagonal'"):
        build_model("deq-mnist", cell="hexagonal")
    with pytest.raises(ConfigError, match="cell_options: cell 'multiscale': width: unknown option"):
        build_model("mdeq-small-16", cell_options={"width": 3})
    with pytest.raises(ConfigError, match="branches"):
        build_model("mdeq-small-16", cell_options={"branches": 9})
    with pytest.raises(ConfigError, match="cell 'residual'"):
        build_model("deq-mnist", cell_options={"branches": 2})


def test_samples_do_not_interact():
    torch.manual_seed(0)
    model = build_model("mdeq-small-8", channels=8)
    deq = find_deq(model)
    x = _images(4)
    u = model.stem(x)
    z = torch.randn_like(u)
    out = deq.cell(z, u)
    z2, u2 = z.clone(), u.clone()
    z2[1:], u2[1:] = torch.randn_like(z2[1:]), torch.randn_like(u2[1:])
    assert torch.equal(deq.cell(z2, u2)[0], out[0])


@pytest.mark.parametrize("name", ["mdeq-small", "mdeq-tiny-16", "mdeq-large-8"])
def test_solver_converges_at_init(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    deq = find_deq(model)
    u = model.stem(_images(8))
    with torch.no_grad():
        for method in ("anderson", "fixed_point"):
            result = solve(lambda z: deq.cell(z, u), torch.zeros_like(u), SolverConfig(method=method, max_iter=30, tol=1e-5))
            assert result.stats.converged_fraction == 1.0 and result.stats.nfe < 30
    assert float(deq.contraction(model.stem(_images(4))).max()) < 1


def test_learns_synthetic_cifar_shaped_images(train_on_synthetic_cifar):
    torch.manual_seed(0)
    model = build_model("mdeq-tiny-8", channels=8)
    losses, test_accuracy = train_on_synthetic_cifar(model, noise=96.0, forward_cap=8)
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    assert test_accuracy >= 0.5  # chance: 0.1


def test_fixed_budget_export_is_the_unrolled_twin_with_shared_weights():
    torch.manual_seed(0)
    deq_model = build_model("mdeq-tiny-16", channels=4).eval()
    twin = build_model("unrolled-mdeq-tiny-16", channels=4, depth=3).eval()
    state = deq_model.state_dict()
    twin_state = {k: v for k, v in state.items() if not k.startswith("deq.")}
    for i in range(3):
        twin_state |= {f"cells.{i}.{k[len('deq.cell.'):]}": v for k, v in state.items() if k.startswith("deq.cell.")}
    twin.load_state_dict(twin_state)
    x = _images(3)
    static = fixed_budget_model(deq_model, 3)
    traced = torch.jit.trace(static, x)
    with torch.no_grad():
        assert torch.allclose(static(x), twin(x), atol=1e-6)
        assert torch.allclose(traced(x), twin(x), atol=1e-6)


def test_anytime_accuracy_runs_exactly_each_budget():
    model = build_model("mdeq-tiny-8", channels=4)
    x, y = _images(6), torch.arange(6) % 10
    counts = []
    handle = find_deq(model).cell.register_forward_hook(lambda *_: counts.append(1))
    result = accuracy_at_budgets(model, x, y, budgets=(1, 3), batch_size=6)
    handle.remove()
    assert set(result) == {1, 3} and len(counts) == 4


@pytest.mark.parametrize("name", ["mdeq-tiny-16", "unrolled-mdeq-tiny-16", "resnet-8"])
def test_heterofl_slicing_is_refused_clearly(name):
    with pytest.raises(ConfigError, match="cannot be width-sliced"):
        narrow_model(build_model(name), 0.5)
