"""The small-call step (kinetics/step/small_step.py): DenseStep, run eagerly, steps as the TorchScript
CompiledStep on the shipped hydrogen and methane models and a tiny random-weight h2o2 model (every
path: frozen, outside the domain, main, near-equilibrium, induction and unresolved cells, inert
species); the Integrator's small calls, with DenseStep in the place of the compiled package and
(slow: one compile) through the package itself, step as the TorchScript Integrator's, and a call
with a fallback cell is the TorchScript call itself."""

from __future__ import annotations

from collections.abc import Callable

import cantera as ct
import numpy as np
import pytest
import torch

from benchmarks.state_mixes import AIR, autoignition
from kinetics.integrator import Integrator
from kinetics.model.model_file import read_model_file
from kinetics.model.registry import resolve_model
from kinetics.step.compiled_step import (
    FLAG_FALLBACK,
    FLAG_FROZEN,
    FLAG_NETWORK,
    CompiledStep,
    script_step,
)
from kinetics.step.forward import NETWORK_PRECISIONS
from kinetics.step.small_step import (
    EXPORT_MAX_CELLS,
    FLAG_NEWTON_SHORT,
    SMALL_CALL_MAX_CELLS,
    DenseStep,
    compile_small_step,
)
from mechanisms.errors import DeepkinError, InputError
from mechanisms.loading import solution_from_yaml
from tests.helpers.models import write_test_model
from tests.helpers.step_cells import edge_cells

# DenseStep against CompiledStep: the networks are the same oneDNN kernels on the same packed
# weights (the same bits); the projection's Cholesky is unrolled (LAPACK's rounds otherwise) and a
# converged cell stops its Newton iterations (the TorchScript step's tensor path for more than 8
# cells iterates all cells until the last converges; both are emulated). Seen: 2.0e-12 K, 2.2e-16.
T_BOUND_K = 1e-10
Y_BOUND = 1e-14
# The Integrator's small calls through the compiled package against the TorchScript Integrator:
# Inductor's generated loops round a few float64 operations differently again. Seen: 1.4e-12 K.
AOT_T_BOUND_K = 1e-10
SETTINGS = {  # the routing settings each test runs with: as shipped, and forcing the rare routes
    "shipped": {},
    "all-induction": {"induction_route_below": float("inf"), "induction_fallback_below": 0.0},
    "unresolved": {"induction_route_below": float("inf"), "induction_fallback_below": 1e3},
    "all-tail": {"route_below": float("inf"), "induction_route_below": 0.0},
}


def _model(name: str):
    meta, tensors, yaml_text = read_model_file(resolve_model(name))
    return meta, tensors, solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)


def _cells(name: str, n_ignition: int = 160) -> np.ndarray:
    """States that take every path of a step of the shipped model ``name``: a 0D ignition's
    solver steps (main and near-equilibrium networks; induction for methane), fresh mixtures at
    φ 0.5/1/2 and 1,000-1,500 K (the induction network's when :data:`SETTINGS` route them there)
    and their equilibria, plus three cells: cold (frozen), at 1/100 of the trained pressure
    (outside the domain) and at 1,100 K (outside hydrogen's trained range)."""
    meta, _, gas = _model(name)
    return _cells_of(meta, gas, n_ignition)


def _cells_of(meta, gas: ct.Solution, n_ignition: int) -> np.ndarray:
    fuel = meta.training.get("fuel") or "H2:1"
    rows = [autoignition(gas, fuel, n=n_ignition)]
    for phi in (0.5, 1.0, 2.0):
        for t0 in (1000.0, 1250.0, 1500.0):
            gas.set_equivalence_ratio(phi, fuel, AIR)
            gas.TP = t0, ct.one_atm
            rows.append(np.r_[gas.T, gas.P, gas.Y][None])
            gas.equilibrate("HP")
            rows.append(np.r_[gas.T, gas.P, gas.Y][None])
    return np.vstack(rows + [edge_cells(gas, fuel, rows[0], meta.pressure_pa[0])])


def _settings(step, dense: DenseStep, changes: dict[str, float]) -> torch.Tensor:
    for name, value in changes.items():
        setattr(step, name, value)
    return dense.settings(step.route_below, step.induction_route_below,
                          step.induction_progress_below, step.induction_fallback_below)


def _flag_counts(flag: torch.Tensor) -> list[int]:
    """DenseStep's last four counts as its flags give them: rows failing the input check (none
    with the default bounds), frozen, fallback and Newton-short rows."""
    return [0] + [int((flag == f).sum()) for f in (FLAG_FROZEN, FLAG_FALLBACK, FLAG_NEWTON_SHORT)]


def _compare(step, dense: DenseStep, x: torch.Tensor, settings: torch.Tensor) -> list[int]:
    """DenseStep's step of ``x`` against the scripted CompiledStep's (``forward(x, 1)`` and the
    counts of ``advance``); the counts."""
    with torch.no_grad():
        expected, flag = step(x, 1)
        _, _, _, counts = step.advance(x, 1, None, True)
        got, got_flag, got_counts = dense(x, settings)
    assert got.dtype == torch.float64 and got_flag.dtype == torch.int8
    assert torch.equal(got_flag, flag)
    assert got_counts.tolist()[:3] == counts.tolist()
    assert got_counts.tolist()[3:] == _flag_counts(got_flag)
    network = flag == FLAG_NETWORK
    assert torch.equal(got[~network], x[~network])  # frozen and fallback cells as given
    assert float((got[:, 0] - expected[:, 0]).abs().max()) <= T_BOUND_K
    assert float((got[:, 2:] - expected[:, 2:]).abs().max()) <= Y_BOUND
    assert torch.equal(got[:, 1], x[:, 1])
    return counts.tolist()


@pytest.mark.parametrize("name, precision", [("h2-air-flame", "float32"),
                                             ("h2-air-flame", "bfloat16"),
                                             ("h2-air-flame", "bfloat16-hidden"),
                                             ("ch4-air", "float32")])
def test_the_dense_step_steps_as_the_compiled_step(name, precision):
    meta, tensors, gas = _model(name)
    dtype, hidden = NETWORK_PRECISIONS[precision]
    step = script_step(CompiledStep.from_model(meta, tensors, gas, "cpu", dtype, hidden))
    step.prepack()
    dense = DenseStep(meta, tensors, gas, dtype, hidden_dtype=hidden).eval()
    assert dense.head.mixed == (hidden is not None)
    x = torch.as_tensor(_cells(name))
    seen = {}
    for label, changes in SETTINGS.items():
        seen[label] = _compare(step, dense, x, _settings(step, dense, changes))
        with torch.no_grad():
            flags = torch.bincount(step(x, 1)[1].long(), minlength=3).tolist()
        assert min(flags) >= 1, (label, flags)  # network, frozen and fallback cells in the batch
    # the batch takes the regime networks, and the forced settings every rare route
    assert seen["shipped"][0] + seen["shipped"][1] > 0
    assert seen["all-tail"][0] > 0 and seen["all-induction"][1] > 0 and seen["unresolved"][2] > 0
    # a few cells at a time (the TorchScript step's Newton on floats, cell by cell; lone rows)
    settings = _settings(step, dense, {"route_below": float(meta.tail["route_below"]),
                                       **{k: float(meta.induction[v]) for k, v in (
                                           ("induction_route_below", "route_below"),
                                           ("induction_progress_below", "progress_below"),
                                           ("induction_fallback_below", "fallback_below"))}})
    for start in range(0, len(x), len(x) // 12):
        for n in (1, 3):
            _compare(step, dense, x[start:start + n], settings)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_the_dense_step_of_a_tiny_model_with_the_box_domain(tmp_path, precision):
    """The random-weight h2o2 model of the service tests (no regime networks, the ``box`` domain,
    inert AR and N2): a float32 MLP on oneDNN, a float64 one as it is."""
    path = write_test_model(tmp_path / "tiny.safetensors", frozen_temperature_k=500.0,
                            temperature_k=(600.0, 3000.0))
    meta, tensors, yaml_text = read_model_file(path)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    dtype = getattr(torch, precision)
    step = script_step(CompiledStep.from_model(meta, tensors, gas, "cpu", dtype))
    dense = DenseStep(meta, tensors, gas, dtype).eval()
    assert dense.domain_check == "box" and dense.has_inert and dense.tail is None
    assert bool(dense.head.activations) == (precision == "float32")
    x = torch.as_tensor(_cells_of(meta, gas, n_ignition=60))
    counts = _compare(step, dense, x, dense.settings(0.0, 0.0, 0.0, 0.0))
    assert counts == [0, 0, 0]
    # the `none` check: T and P only (the cell at 1/100 of the pressure is still outside)
    none = DenseStep(meta, tensors, gas, dtype, domain_check="none").eval()
    step.domain_check = "none"
    _compare(step, none, x, none.settings(0.0, 0.0, 0.0, 0.0))


def test_newton_short_of_convergence_hands_the_cell_to_the_torchscript_step():
    """A cell whose enthalpy inversion has not converged within the fixed iterations comes back
    as given, flagged FLAG_NEWTON_SHORT (the Integrator steps it again by TorchScript), not
    FLAG_FALLBACK (which goes straight to Cantera)."""
    meta, tensors, gas = _model("h2-air-flame")
    dense = DenseStep(meta, tensors, gas, torch.float32).eval()
    x = torch.as_tensor(_cells("h2-air-flame", n_ignition=40))
    settings = dense.settings(0.1, 0.1, 0.5, 0.01)
    with torch.no_grad():
        _, flag, _ = dense(x, settings)
        dense.newton_iterations = 1  # a step of T needs 3 or more
        out, short, _ = dense(x, settings)
    stepped = flag == FLAG_NETWORK
    assert int(stepped.sum()) > 10
    assert bool((short[stepped] == FLAG_NEWTON_SHORT).all())
    assert torch.equal(short[~stepped], flag[~stepped]) and torch.equal(out[stepped], x[stepped])


def test_compiling_without_a_compiler_is_one_line(tmp_path):
    from torch._inductor import config

    path = write_test_model(tmp_path / "tiny.safetensors")
    meta, tensors, yaml_text = read_model_file(path)
    gas = solution_from_yaml(yaml_text, meta.phase, meta.mechanism_sha256)
    # torch's own patching (monkeypatch's undo leaves the option hidden for later compiles)
    with config.patch({"cpp.cxx": (None, "no-such-c++-compiler")}), \
            pytest.raises(DeepkinError, match="no C\\+\\+ compiler found") as caught:
        compile_small_step(DenseStep(meta, tensors, gas), tmp_path / "x.pt2")
    assert "\n" not in str(caught.value) and not (tmp_path / "x.pt2").exists()
    with pytest.raises(InputError, match="small_calls: must be torchscript or aot"):
        Integrator(meta, tensors, yaml_text, device="cpu", small_calls="fast")


class _EagerSmallStep:
    """A stand-in for the compiled package (:class:`SmallStep`): DenseStep run eagerly, its calls
    counted; what the Integrator's small-call path is tested with when nothing is compiled."""

    def __init__(self, dense: DenseStep, max_cells: int = EXPORT_MAX_CELLS):
        self.dense, self.max_cells, self.calls = dense, max_cells, 0
        self.domain = (dense.domain_check, dense.use_grid)

    def __call__(self, states: torch.Tensor, settings: torch.Tensor):
        self.calls += 1
        with torch.no_grad():
            return self.dense(states, settings)


def _check_small_calls(aot: Integrator, plain: Integrator, calls: Callable[[], int]) -> None:
    """``aot``'s small calls (``calls()`` counts them) step as the TorchScript Integrator
    ``plain`` (the same flags, counts and fallback cells, T within 1e-10 K); the cells the
    fallback took are the TorchScript Integrator's, bit for bit; routing settings apply at once;
    several model steps, a ``stop`` or more cells than the cut-over go to TorchScript, and so
    do calls with a domain check the small step was not made for."""
    assert aot.small_calls == "aot" and plain.small_calls == "torchscript"
    assert aot.precision == plain.precision
    cells = _cells("h2-air-flame")
    rng = np.random.default_rng(1)
    fallbacks = expected_calls = 0
    for label, changes in SETTINGS.items():
        for name, value in changes.items():
            setattr(aot, name, value)
            setattr(plain, name, value)
        # (the cut-over's size with the shipped settings only: the forced ones send many cells
        # to Cantera, twice)
        for n in (1, 3, 36, aot.small_call_max_cells) if label == "shipped" else (1, 3, 36):
            for _ in range(4):
                expected_calls += 1
                batch = cells[rng.integers(0, len(cells), n)]
                a, b = aot.advance(batch), plain.advance(batch)
                assert np.array_equal(a.frozen, b.frozen) and np.array_equal(a.fallback, b.fallback)
                assert (a.n_frozen, a.n_fallback, a.n_tail_steps, a.n_induction_steps,
                        a.n_unresolved_steps) == (b.n_frozen, b.n_fallback, b.n_tail_steps,
                                                  b.n_induction_steps, b.n_unresolved_steps), label
                assert np.abs(a.states[:, 0] - b.states[:, 0]).max() <= AOT_T_BOUND_K
                assert np.abs(a.states[:, 2:] - b.states[:, 2:]).max() <= Y_BOUND
                if b.n_fallback:
                    fallbacks += 1
                    # the held cells: the TorchScript step's, then Cantera's, from the same state
                    assert np.array_equal(a.states[b.fallback], b.states[b.fallback])
    assert calls() == expected_calls and fallbacks >= 10
    # not for it: several model steps, more cells than the cut-over, a `stop`
    before = calls()
    aot.advance(cells[:4], 2)
    aot.advance(cells[:aot.small_call_max_cells + 1])
    aot.advance(cells[:4], stop=lambda: False)
    assert calls() == before
    assert aot.advance(cells[:1]).states.shape == (1, cells.shape[1]) and calls() == before + 1
    # a frozen batch comes back as given (the array itself, as from TorchScript)
    cold = cells[-3:-2].repeat(3, axis=0)
    frozen = aot.advance(cold)
    assert frozen.states is cold and frozen.n_frozen == 3 and calls() == before + 2
    # a domain check it was not made for goes to TorchScript, and back
    aot.domain_check = plain.domain_check = "box"
    assert aot.small_calls == "torchscript"
    batch = cells[:5]
    assert np.array_equal(aot.advance(batch).states, plain.advance(batch).states)
    assert calls() == before + 2
    aot.domain_check = "occupancy"
    assert aot.small_calls == "aot"
    aot.advance(batch)
    assert calls() == before + 3
    aot.grid = None  # no grid: not what it was made for either
    assert aot.small_calls == "torchscript"


def _eager_small_calls(name: str) -> tuple[Integrator, Integrator, _EagerSmallStep]:
    """Two Integrators of the shipped model ``name``: TorchScript only, and one whose small calls
    go to DenseStep run eagerly in the package's place (its calls counted), and that stand-in."""
    path = resolve_model(name)
    plain = Integrator.load(path, device="cpu")
    aot = Integrator.load(path, device="cpu")
    meta, tensors, _ = _model(name)
    small = _EagerSmallStep(DenseStep(meta, tensors, aot.gas, aot.dtype).eval())
    aot._small = small
    aot.small_call_max_cells = SMALL_CALL_MAX_CELLS
    aot._settings_changed()
    return plain, aot, small


def _bad_batches(cells: np.ndarray) -> list[np.ndarray]:
    """Batches of ``cells`` (1, 3 and 36 rows) each with one bad row, and what it breaks."""
    bad = []
    for n, row in ((1, 0), (3, 2), (36, 17)):
        for column, value in ((0, np.nan), (0, 1e5), (1, -1.0), (1, 1e12), (4, -0.01),
                              (4, 0.5), (5, np.inf)):
            batch = cells[:n].copy()
            batch[row, column] = value
            bad.append(batch)
    return bad


def test_bad_input_through_small_calls_is_refused_as_by_torchscript():
    """A small call checks its values in the compiled step (fused), and refuses a bad row with
    the TorchScript Integrator's own message (the row-by-row check runs once a row fails): NaN
    and inf, T and P out of range, negative Y, ΣY off 1, alone and in batches; also for the
    rows held on Cantera in a rollout. A cold cell below the thermo range passes (frozen);
    ``check=False`` skips the check."""
    plain, aot, small = _eager_small_calls("h2-air-flame")
    cells = _cells("h2-air-flame")
    for batch in _bad_batches(cells):
        with pytest.raises(InputError) as expected:
            plain.advance(batch)
        before = small.calls
        with pytest.raises(InputError) as caught:
            aot.advance(batch)
        assert str(caught.value) == str(expected.value) and small.calls == before + 1
    with pytest.raises(InputError, match="expected shape"):
        aot.advance(cells[:3, :-1])
    cold = cells[:3].copy()
    cold[1, 0] = 200.0  # below the thermo range (300 K) and the frozen temperature: frozen
    assert aot.advance(cold).n_frozen == plain.advance(cold).n_frozen == 1
    out_of_range = cells[:3].copy()
    out_of_range[1, 0] = 1e5
    assert aot.advance(out_of_range, check=False).states.shape == out_of_range.shape
    # a rollout holding rows on Cantera: a bad held row is refused too
    fresh = cells[-1:].repeat(2, axis=0)  # 1,100 K: outside hydrogen's trained range
    with aot.following_cells(hold_steps=8):
        first = aot.advance(fresh)
        assert first.n_fallback == 2
        bad = first.states.copy()
        bad[1, 3] = -0.5
        with pytest.raises(InputError, match="row 1 has negative mass fraction"):
            aot.advance(bad)
        assert aot.advance(first.states).n_held == 2


def test_validate_auto_compiles_the_small_step_for_long_rollouts_only(monkeypatch, tmp_path):
    """``validate(small_calls="auto")``: a short rollout with nothing cached stays on the
    TorchScript step (nothing compiled); one of AUTO_COMPILE_MIN_STEPS steps or more asks for
    the compiled step (here DenseStep run eagerly in the package's place: the compile itself is
    the slow test's), which then runs the rollout's calls; the report names the step. Without a
    C++ compiler the TorchScript step runs it."""
    import kinetics.integrator as integrator_module
    from kinetics.validation import validate as validate_module

    asked: list[bool] = []

    def stand_in(meta, tensors, gas, dtype, domain_check, use_grid, digest, hidden_dtype=None,
                 compile_missing=True):
        asked.append(compile_missing)
        if not compile_missing:
            return None  # nothing in the cache
        return _EagerSmallStep(DenseStep(meta, tensors, gas, dtype, domain_check, use_grid,
                                         hidden_dtype).eval())

    monkeypatch.setattr(integrator_module, "load_small_step", stand_in)
    grid = dict(temperatures_k=[1200.0], pressures_atm=[1.0], phis=[1.0], rollout_steps=200,
                progress=False, after_ignition_s=0.0)
    integrator = Integrator.load(resolve_model("h2-air"), device="cpu")
    short = validate_module.validate(integrator, "H2:1", "O2:1,N2:3.76", small_calls="auto", **grid)
    assert short.small_calls == "torchscript" and asked == [False]
    assert integrator.small_calls == "torchscript"
    monkeypatch.setattr(validate_module, "AUTO_COMPILE_MIN_STEPS", 100)
    long = validate_module.validate(integrator, "H2:1", "O2:1,N2:3.76", small_calls="auto", **grid)
    assert long.small_calls == "aot" and asked == [False, False, True]
    assert integrator._small.calls >= 200
    assert "the step compiled ahead of time" in long.markdown()
    assert abs(long.conditions[0].final_t_surrogate_k - short.conditions[0].final_t_surrogate_k) < 1e-6

    def no_compiler(*args, **kwargs):
        if not kwargs.get("compile_missing", True):
            return None
        raise DeepkinError("aot: no C++ compiler found (looked for c++); use "
                           "small_calls='torchscript'")

    monkeypatch.setattr(integrator_module, "load_small_step", no_compiler)
    fresh = Integrator.load(resolve_model("h2-air"), device="cpu")
    report = validate_module.validate(fresh, "H2:1", "O2:1,N2:3.76", small_calls="auto", **grid)
    assert report.small_calls == "torchscript"
    with pytest.raises(InputError, match="small_calls: must be auto or None"):
        validate_module.validate(fresh, "H2:1", "O2:1,N2:3.76", small_calls="aot", **grid)


def test_the_integrators_small_calls_step_as_torchscript():
    """The Integrator's small-call path with DenseStep run eagerly in the package's place (no
    compile): see :func:`_check_small_calls`."""
    plain, aot, small = _eager_small_calls("h2-air-flame")
    _check_small_calls(aot, plain, lambda: small.calls)


@pytest.mark.slow
def test_small_calls_through_the_compiled_step_step_as_torchscript():
    """The same through one AOTInductor compile of h2-air-flame (its precision on this CPU;
    35-75 s on one core of a shared 2-core machine, hence slow), and a second load reads the
    package from the cache."""
    path = resolve_model("h2-air-flame")
    aot = Integrator.load(path, device="cpu", small_calls="aot")
    plain = Integrator.load(path, device="cpu")
    calls = []
    run = aot._small._run
    aot._small._run = lambda inputs: calls.append(len(inputs[0])) or run(inputs)
    _check_small_calls(aot, plain, lambda: len(calls))
    again = Integrator.load(path, device="cpu", small_calls="aot")
    assert again._small.compile_s == 0.0 and again._small.package == aot._small.package
    assert aot._small.package.parent.name == "aot" and aot._small.package.suffix == ".pt2"
    assert aot._small.compile_s > 0.0 and again.small_calls == "aot"
