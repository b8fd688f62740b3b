"""A-posteriori validation: 0D constant-pressure autoignition, surrogate against Cantera.

For every (T0, P, φ) condition the surrogate rolls the mixture forward step by step (all
conditions in one batch) and Cantera integrates the same reactor adaptively. Reported: ignition
delay (first crossing of T0 + 400 K, interpolated linearly within the step) against Cantera's
solution read on the same step grid (like for like: the surrogate's own error) and against
Cantera's adaptive solution (which adds the grid's own interpolation error; a perfect integrator
with the model's dt scores ``grid_idt_max_rel`` there), the temperature at
the end of the rollout against Cantera's, the equilibrium drift over a long rollout, ΣY and
enthalpy conservation on every step, and the fraction of cell-steps that fell back to Cantera.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cantera as ct
import numpy as np
import torch

from kinetics.integrator import Integrator
from kinetics.validation.inputs import check_grid, prepare_out_dir
from mechanisms.atomic_io import why_not_writable
from mechanisms.composition import mixture_mass_fractions
from mechanisms.errors import DeepkinError, InputError
from mechanisms.ignition import IGNITION_RISE_K, crossing_time
from mechanisms.loading import solution_from_yaml
from mechanisms.reactor import trajectory
from mechanisms.state import ONE_ATM_PA, join_states, mass_fractions, temperature
from mechanisms.states_file import write_states

TARGETS = {"idt_max_rel": 0.10, "idt_mean_rel": 0.03, "equilibrium_k": 10.0, "sum_y": 1e-6,
           "enthalpy_rel": 1e-6, "after_ignition_rel": 0.10}
# Species read after ignition by default, those of them the mechanism has (pollutants).
AFTER_IGNITION_SPECIES = ("CO", "NO")
# A rollout's cell that the model hands to Cantera stays there this many steps before the model
# is asked again (Integrator.following_cells): slow induction below the induction network's
# resolution lasts 10^4-10^5 steps, each of which paid the networks only to be handed over again.
ROLLOUT_HOLD_STEPS = 32
# small_calls="auto": a rollout of at least this many steps compiles the AOTInductor small-call
# step when it is not cached (35-75 s once a model and machine, which a rollout this long wins
# back: ~0.4-0.7 ms a step of the recipe grid's 36 cells, docs/training.md); a shorter one uses
# a cached package if there is one, else the TorchScript step.
AUTO_COMPILE_MIN_STEPS = 300_000
STEP_NAMES = {"torchscript": "the TorchScript step", "aot": "the step compiled ahead of time"}
CONSERVATION_BLOCK = 256  # rollout steps whose ΣY and enthalpy are checked in one call


@dataclass
class ConditionResult:
    temperature_k: float
    pressure_atm: float
    phi: float
    idt_cantera_s: float | None  # Cantera, adaptive steps (the continuous solution)
    idt_surrogate_s: float | None
    idt_rel_error: float | None  # surrogate against Cantera on the same step grid
    final_t_cantera_k: float
    final_t_surrogate_k: float
    final_t_error_k: float
    equilibrium_t_k: float
    steps: int
    idt_cantera_grid_s: float | None = None  # Cantera's solution read every dt, interpolated alike
    idt_rel_error_continuous: float | None = None  # surrogate against the adaptive Cantera IDT
    network_steps: int = 0  # steps whose cell a network advanced (0: never in the model's domain)
    active_steps: int = 0  # steps whose cell was not frozen (the network or Cantera advanced it)
    # Species mass fractions ``after_ignition_s`` after each side's own ignition:
    # {species: [Cantera, surrogate or None (not reached), relative error or None]}.
    after_ignition: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def served_fraction(self) -> float:
        """Share of the condition's non-frozen cell-steps a network served (not Cantera)."""
        return self.network_steps / self.active_steps if self.active_steps else 0.0

    @property
    def label(self) -> str:
        return f"T0 {self.temperature_k:g} K, {self.pressure_atm:g} atm, φ {self.phi:g}"


@dataclass
class ValidationReport:
    model: str
    conditions: list[ConditionResult]
    rollout_steps: int
    idt_max_rel: float  # against Cantera on the same step grid
    idt_mean_rel: float
    equilibrium_max_k: float
    sum_y_max_dev: float
    enthalpy_max_rel: float
    fallback_fraction: float
    seconds_surrogate: float
    seconds_cantera: float
    tail_fraction: float = 0.0  # cell-steps whose rates came from the near-equilibrium network
    induction_fraction: float = 0.0  # cell-steps whose rates came from the induction network
    # cell-steps below the induction network's resolution, stepped by Cantera (in fallback too)
    unresolved_fraction: float = 0.0
    held_fraction: float = 0.0  # of the fallback: held on Cantera without asking the model
    idt_max_rel_continuous: float = 0.0  # against Cantera's adaptive solution
    idt_mean_rel_continuous: float = 0.0
    grid_idt_max_rel: float = 0.0  # Cantera on the step grid against itself adaptive
    targets: dict = field(default_factory=lambda: dict(TARGETS))
    # Conditions no network ever stepped (Cantera took every step): left out of the figures.
    outside_domain: list[str] = field(default_factory=list)
    # With flames=True: the cells of Cantera's flames the model serves
    # (kinetics/validation/flame_coverage.py).
    flames: list[dict] = field(default_factory=list)
    # The networks' dtype and the device they ran on (Integrator.precision, .device).
    precision: str = "float32"
    device: str = "cpu"
    small_calls: str = "torchscript"  # the step that ran the rollout (Integrator.small_calls)
    after_ignition_s: float = 0.0  # when the species of ConditionResult.after_ignition are read

    def after_ignition_max_rel(self) -> dict[str, float]:
        """The largest relative error of each tracked species ``after_ignition_s`` after
        ignition over the conditions where both sides ignited (100 % where the surrogate never
        got there)."""
        worst: dict[str, float] = {}
        for c in self.conditions:
            if c.network_steps == 0:
                continue
            for name, (_, _, error) in c.after_ignition.items():
                worst[name] = max(worst.get(name, 0.0), 1.0 if error is None else error)
        return worst

    @property
    def passed(self) -> dict[str, bool]:
        species = self.after_ignition_max_rel()
        return {
            **({"after_ignition": max(species.values()) <= TARGETS["after_ignition_rel"]}
               if species else {}),
            "idt_max_rel": self.idt_max_rel <= TARGETS["idt_max_rel"],
            "idt_mean_rel": self.idt_mean_rel <= TARGETS["idt_mean_rel"],
            "equilibrium_k": self.equilibrium_max_k <= TARGETS["equilibrium_k"],
            "sum_y": self.sum_y_max_dev <= TARGETS["sum_y"],
            "enthalpy_rel": self.enthalpy_max_rel <= TARGETS["enthalpy_rel"],
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for row, c in zip(d["conditions"], self.conditions):
            row["served_fraction"] = c.served_fraction
        return d

    def markdown(self) -> str:
        p = self.passed
        mark = {True: "pass", False: "FAIL"}
        lines = [
            f"# Validation of `{self.model}`",
            "",
            "0D adiabatic constant-pressure autoignition, surrogate against Cantera. Ignition delay ="
            " first crossing of T0 + 400 K, interpolated linearly within the step. The IDT error"
            " compares like with like: the surrogate's trajectory against Cantera's solution read"
            " on the same step grid and interpolated the same way. Against Cantera's adaptive"
            " solution the grid's own interpolation error is added; the last IDT row shows what"
            " a perfect integrator with this dt scores there.",
            "",
            "| figure | value | target | |",
            "|---|---|---|---|",
            f"| max IDT error | {100 * self.idt_max_rel:.2f} % | ≤ 10 % | {mark[p['idt_max_rel']]} |",
            f"| mean IDT error | {100 * self.idt_mean_rel:.2f} % | ≤ 3 % | {mark[p['idt_mean_rel']]} |",
            f"| max / mean IDT error against adaptive Cantera | "
            f"{100 * self.idt_max_rel_continuous:.2f} % / {100 * self.idt_mean_rel_continuous:.2f} %"
            " | | |",
            f"| max IDT error of Cantera itself on the step grid, against adaptive Cantera | "
            f"{100 * self.grid_idt_max_rel:.2f} % | | |",
            f"| equilibrium T after {self.rollout_steps} steps (max abs error) | "
            f"{self.equilibrium_max_k:.2f} K | ≤ 10 K | {mark[p['equilibrium_k']]} |",
            f"| max \\|ΣY − 1\\| on any step | {self.sum_y_max_dev:.1e} | ≤ 1e-6 | {mark[p['sum_y']]} |",
            f"| max enthalpy drift on any step (relative) | {self.enthalpy_max_rel:.1e} | ≤ 1e-6 | "
            f"{mark[p['enthalpy_rel']]} |",
            f"| cell-steps that fell back to Cantera | {100 * self.fallback_fraction:.2f} % | | |",
            f"| of which below the induction network's resolution | "
            f"{100 * self.unresolved_fraction:.2f} % | | |",
            f"| of which held on Cantera after a hand-over, the model not asked | "
            f"{100 * self.held_fraction:.2f} % | | |",
            f"| cell-steps served by the near-equilibrium network | {100 * self.tail_fraction:.2f} % "
            "| | |",
            f"| cell-steps served by the induction network | {100 * self.induction_fraction:.2f} % "
            "| | |",
            f"| lowest share of a condition's cell-steps served by a network | "
            f"{100 * min((c.served_fraction for c in self.conditions), default=0.0):.2f} % | | |",
            *[f"| {name} {1e3 * self.after_ignition_s:g} ms after ignition (max relative error) | "
              f"{100 * error:.2f} % | ≤ 10 % | {mark[error <= TARGETS['after_ignition_rel']]} |"
              for name, error in self.after_ignition_max_rel().items()],
            "",
            *([f"Never inside the model's domain (Cantera took every step; not in the figures "
               f"above): {'; '.join(self.outside_domain)}.", ""] if self.outside_domain else []),
            f"Networks in {self.precision} on {self.device}. Surrogate rollout: "
            f"{self.seconds_surrogate:.1f} s ({STEP_NAMES.get(self.small_calls, self.small_calls)}); "
            f"Cantera reference: {self.seconds_cantera:.1f} s.",
            "",
            "Served: the share of the condition's cell-steps (none is frozen) that a network "
            "advanced; Cantera took the rest.",
            "",
            "| T0 (K) | P (atm) | φ | IDT Cantera, adaptive (s) | IDT Cantera, step grid (s) | "
            "IDT surrogate (s) | error | error vs adaptive | T end Cantera (K) | "
            "T end surrogate (K) | served |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]

        def seconds(v: float | None) -> str:
            return "none" if v is None else f"{v:.4e}"

        def percent(v: float | None) -> str:
            return "—" if v is None else f"{100 * v:.2f} %"

        tracked = list(self.after_ignition_max_rel())
        if tracked:
            lines[-2] = lines[-2] + "".join(
                f" {name} at +{1e3 * self.after_ignition_s:g} ms: Cantera / surrogate / error |"
                for name in tracked)
            lines[-1] = lines[-1] + "---|" * len(tracked)
        for c in self.conditions:
            extra = "".join(_after_ignition_cell(c.after_ignition.get(name)) for name in tracked)
            lines.append(f"| {c.temperature_k:g} | {c.pressure_atm:g} | {c.phi:g} | "
                         f"{seconds(c.idt_cantera_s)} | {seconds(c.idt_cantera_grid_s)} | "
                         f"{seconds(c.idt_surrogate_s)} | {percent(c.idt_rel_error)} | "
                         f"{percent(c.idt_rel_error_continuous)} | {c.final_t_cantera_k:.1f} | "
                         f"{c.final_t_surrogate_k:.1f} | {100 * c.served_fraction:.1f} % |{extra}")
        if self.flames:
            from kinetics.validation.flame_coverage import FlameCoverage, coverage_table

            rows = [FlameCoverage(**{k: v for k, v in f.items() if not k.endswith("_fraction")})
                    for f in self.flames]
            lines += ["", "## Flames: the cells the model serves", "",
                      "Cantera's flames (unburnt at 300 K) read on a uniform 20 µm grid, every cell "
                      "advanced by one model step: the share of the non-frozen cells (and of the "
                      "flame zone, heat release ≥ 1 % of the peak) that a network served.", "",
                      *coverage_table(rows)]
        lines += ["", "![T(t)](temperature.png)", "", "![species](species.png)", ""]
        return "\n".join(lines)


def _after_ignition_cell(values: list[float | None] | None) -> str:
    if not values:
        return " — |"
    cantera, surrogate, error = values
    if surrogate is None:
        return f" {cantera:.3e} / not reached |"
    return f" {cantera:.3e} / {surrogate:.3e} / {100 * error:.2f} % |"


def _relative_error(value: float | None, reference: float | None) -> float | None:
    """|value − reference| / reference; 100 % when exactly one of them is missing (no ignition)."""
    if reference is None:
        return None if value is None else 1.0
    return 1.0 if value is None else abs(value - reference) / reference


def validate(integrator: Integrator, fuel: str, oxidizer: str, temperatures_k: list[float],
             pressures_atm: list[float], phis: list[float], rollout_steps: int = 10000,
             t_end_factor: float = 2.0, out_dir: str | Path | None = None,
             progress: bool = True, ignition_search_s: float = 0.2,
             flames: bool = False, after_ignition_s: float = 0.01,
             after_ignition_species: list[str] | None = None,
             states_out: str | Path | None = None,
             hold_steps: int = ROLLOUT_HOLD_STEPS,
             small_calls: str | None = None) -> ValidationReport:
    """Run the validation and (when ``out_dir`` is given) write report.md, report.json and PNGs.

    Cantera looks for ignition up to ``ignition_search_s`` (s); the surrogate rolls out
    ``max(rollout_steps, t_end_factor × the slowest Cantera ignition delay / dt)`` steps.
    InputError before any work for a grid or folder ``kinetics/validation/inputs.py`` refuses;
    conditions no network ever stepped are listed in ``outside_domain`` and left out of the
    figures. ``flames``: also count the cells of Cantera's premixed and counterflow flames the
    model serves (:func:`kinetics.validation.flame_coverage.standard_coverage`). ``after_ignition_species``
    (default: those of :data:`AFTER_IGNITION_SPECIES` the mechanism has) are compared
    ``after_ignition_s`` (s) after each side's own ignition; the rollout is made long enough.
    ``states_out``: also write the surrogate's own states (every recorded step of every
    condition, see :func:`rollout_states`) as a states file, for the ``solver_states`` source.
    ``hold_steps``: a cell the model hands to Cantera stays there for that many more steps
    before the model is asked again (:meth:`Integrator.following_cells`; 0: asked every step).
    ``small_calls``: None runs the rollout on the Integrator as it is; ``auto`` (on a CPU)
    switches it to the AOTInductor step (:meth:`Integrator.use_small_calls`) when that is cached,
    or compiles it for a rollout of :data:`AUTO_COMPILE_MIN_STEPS` steps or more (where there is
    no C++ compiler the TorchScript step runs it, and the progress line says so); the report's
    ``small_calls`` says which step ran it.
    """
    if small_calls not in (None, "auto"):
        raise InputError(f"small_calls: must be auto or None, got {small_calls!r}")
    if states_out is not None:
        reason = why_not_writable(states_out)
        if reason:
            raise InputError(f"states-out: cannot write {states_out}: {reason}")
    gas = solution_from_yaml(integrator.mechanism_yaml, integrator.meta.phase,
                             integrator.meta.mechanism_sha256)
    check_grid(integrator, gas, temperatures_k, pressures_atm, phis)
    tracked = tracked_species(integrator.species, after_ignition_species)
    if not (math.isfinite(after_ignition_s) and after_ignition_s >= 0):
        raise InputError(f"after-ignition-s: must be a number >= 0 (s), got {after_ignition_s!r}")
    if out_dir is not None:
        out_dir = prepare_out_dir(out_dir)
    dt = integrator.dt_s
    conditions = [_Condition(t0, p_atm, phi, mixture_mass_fractions(gas, fuel, oxidizer, phi))
                  for t0, p_atm, phi in itertools.product(temperatures_k, pressures_atm, phis)]

    started = time.perf_counter()
    refs = [_cantera_reference(gas, c, max(rollout_steps * dt, ignition_search_s))
            for c in conditions]
    seconds_cantera = time.perf_counter() - started
    slowest_idt = max((r.idt_s for r in refs if r.idt_s is not None), default=0.0)
    n_steps = max(rollout_steps, int(math.ceil(t_end_factor * slowest_idt / dt)))
    if tracked:  # room for the later of the two ignitions plus the delay
        n_steps = max(n_steps, int(math.ceil((1.25 * slowest_idt + after_ignition_s) / dt)))
    columns = [integrator.species.index(name) for name in tracked]
    if small_calls == "auto":
        _auto_small_calls(integrator, n_steps, progress)
    rollout = _surrogate_rollout(integrator, conditions, n_steps, progress, hold_steps,
                                 (columns, after_ignition_s))
    results = [_condition_result(gas, c, ref, rollout, i)
               for i, (c, ref) in enumerate(zip(conditions, refs))]
    for i, (c, ref, result) in enumerate(zip(conditions, refs, results)):
        result.after_ignition = _after_ignition(gas, c, ref, rollout.after_ignition_y[i],
                                                tracked, columns, after_ignition_s)
    report = _report(integrator.meta.name, results, rollout, seconds_cantera)
    report.precision, report.device = integrator.precision, str(integrator.device)
    report.small_calls = integrator.small_calls
    report.after_ignition_s = after_ignition_s if tracked else 0.0
    if flames:
        from kinetics.validation.flame_coverage import standard_coverage

        report.flames = [f.to_dict() for f in standard_coverage(integrator, fuel, oxidizer)]
    if out_dir is not None:
        write_report(report, out_dir, rollout, refs, integrator.species)
    if states_out is not None:
        grid = ", ".join(f"{c.temperature_k:g} K/{c.pressure_atm:g} atm/phi {c.phi:g}"
                         for c in conditions[:4])
        write_states(states_out, rollout_states(rollout, conditions), integrator.species,
                     origin=f"deepkin validate rollout of {integrator.meta.name}: "
                            f"{len(conditions)} conditions ({grid}"
                            f"{', …' if len(conditions) > 4 else ''}), {rollout.n_steps} steps "
                            f"of {dt:g} s")
    return report


def _auto_small_calls(integrator: Integrator, n_steps: int, progress: bool) -> None:
    """``small_calls="auto"``: the AOTInductor step for the rollout where it is cached, or
    compiled for a rollout of :data:`AUTO_COMPILE_MIN_STEPS` steps or more; else TorchScript."""
    if integrator.device.type != "cpu" or integrator.small_calls == "aot":
        return
    if integrator.use_small_calls(compile_missing=False):
        return
    if n_steps < AUTO_COMPILE_MIN_STEPS:
        return
    if progress:
        print(f"compiling the small-call step ahead of time for a rollout of {n_steps:,} steps "
              "(about a minute, once a model and machine; --small-calls torchscript to skip)",
              flush=True)
    try:
        integrator.use_small_calls()
    except DeepkinError as exc:
        if progress:
            print(f"the TorchScript step runs the rollout: {exc}", flush=True)


def rollout_states(rollout: _Rollout, conditions: list[_Condition]) -> np.ndarray:
    """The surrogate's states ``[m × n_cond, 2 + ns]`` (T in K, P in Pa, Y) at the rollout's
    recorded steps (about 2000, evenly spaced in time, the fresh mixture first), condition by
    condition: the states its own trajectory visits, drift included."""
    steps = np.rint(rollout.recorded_times_s / (rollout.times_s[1] - rollout.times_s[0]))
    temps = rollout.temperature_k[steps.astype(np.int64)]  # [m, n_cond]
    parts = []
    for i, c in enumerate(conditions):
        parts.append(join_states(temps[:, i], np.full(len(temps), c.pressure_pa),
                                 rollout.recorded_y[:, i, :]))
    return np.concatenate(parts)


@dataclass
class _Condition:
    """One point of the grid: T0 (K), P (atm), φ and the fresh mixture's Y0 ``[ns]``."""

    temperature_k: float
    pressure_atm: float
    phi: float
    y0: np.ndarray

    @property
    def pressure_pa(self) -> float:
        return self.pressure_atm * ONE_ATM_PA


@dataclass
class _Reference:
    """Cantera's adaptive solution of one condition: ``times_s`` ``[m]``, ``temperature_k``
    ``[m]``, ``mass_fractions`` ``[m, ns]`` and the ignition delay (None: no ignition)."""

    times_s: np.ndarray
    temperature_k: np.ndarray
    mass_fractions: np.ndarray
    idt_s: float | None


def _cantera_reference(gas: ct.Solution, c: _Condition, t_end_s: float) -> _Reference:
    """Cantera's adaptive solution up to ``t_end_s``, the crossing interpolated between its own
    steps."""
    times, states = trajectory(gas, join_states([c.temperature_k], [c.pressure_pa],
                                                c.y0[None, :])[0], t_end_s)
    t_k = temperature(states)
    return _Reference(times, t_k, mass_fractions(states),
                      crossing_time(times, t_k, c.temperature_k + IGNITION_RISE_K))


@dataclass
class _Rollout:
    """The surrogate's rollout of every condition in one batch.

    ``times_s`` ``[k+1]`` (every step), ``temperature_k`` ``[k+1, n_cond]``; ``recorded_times_s``
    ``[m]`` and ``recorded_y`` ``[m, n_cond, ns]`` every few steps (for the plots); the worst
    |ΣY − 1| and relative enthalpy drift of any step; cell-steps that fell back to Cantera or were
    served by the near-equilibrium network; ``network_steps`` ``[n_cond]``: steps a network took.
    """

    times_s: np.ndarray
    temperature_k: np.ndarray
    recorded_times_s: np.ndarray
    recorded_y: np.ndarray
    sum_y_max_dev: float
    enthalpy_max_rel: float
    n_fallback: int
    n_tail_steps: int
    network_steps: np.ndarray
    seconds: float
    active_steps: np.ndarray | None = None  # [n_cond]: steps whose cell was not frozen
    n_induction_steps: int = 0
    n_unresolved_steps: int = 0
    # [n_cond] of [n_tracked] mass fractions after_ignition_s after the surrogate's ignition
    # (None: not reached within the rollout)
    after_ignition_y: list[np.ndarray | None] = field(default_factory=list)
    n_held_steps: int = 0  # cell-steps held on Cantera without asking the model (hold_steps)

    @property
    def n_steps(self) -> int:
        return len(self.times_s) - 1


def _surrogate_rollout(integrator: Integrator, conditions: list[_Condition], n_steps: int,
                       progress: bool, hold_steps: int,
                       after_ignition: tuple[list[int], float] = ([], 0.0)) -> _Rollout:
    """``n_steps`` model steps from every condition's fresh mixture at once; ``after_ignition``:
    the species columns to read, and when (s) after each condition's own ignition."""
    from tqdm import tqdm

    state = join_states(np.array([c.temperature_k for c in conditions]),
                        np.array([c.pressure_pa for c in conditions]),
                        np.array([c.y0 for c in conditions]))
    thermo, device = integrator.thermo, integrator.device
    h0 = thermo.enthalpy(torch.as_tensor(temperature(state), device=device),
                         torch.as_tensor(mass_fractions(state), device=device))
    temps = np.empty((n_steps + 1, len(conditions)))
    temps[0] = temperature(state)
    record_every = max(1, n_steps // 2000)
    y_hist, t_hist = [mass_fractions(state).copy()], [0.0]
    # ΣY and enthalpy drift of every step, checked CONSERVATION_BLOCK steps at a time (one call
    # on all their cells instead of two a step)
    deviations = [0.0, 0.0]  # max |ΣY − 1|, max relative enthalpy drift
    pending: list[torch.Tensor] = []

    def check_conservation() -> None:
        if not pending:
            return
        block = torch.cat(pending)
        pending.clear()
        y = mass_fractions(block)
        deviations[0] = max(deviations[0], float(torch.abs(y.sum(dim=1) - 1.0).max()))
        h = thermo.enthalpy(temperature(block), y).view(-1, len(conditions))
        deviations[1] = max(deviations[1], float((torch.abs(h - h0) / torch.clamp(
            torch.abs(h0), min=1e3)).max()))

    fallback = 0
    tail_steps = induction_steps = unresolved_steps = held_steps = 0
    network_steps = np.zeros(len(conditions), dtype=np.int64)
    active_steps = np.zeros(len(conditions), dtype=np.int64)
    x = torch.as_tensor(state, device=device)
    capture = _IgnitionCapture(conditions, *after_ignition, integrator.dt_s,
                               mass_fractions(state))
    started = time.perf_counter()
    # the same cells come back every step: a slow-induction cell the Cantera fallback steps goes
    # on from its own reactor instead of restarting CVODES each step, and stays with it for
    # hold_steps steps before the model is asked again (Integrator.following_cells); up to 64
    # conditions are followed (~4 MiB each on GRI-3.0)
    with integrator.following_cells(hold_steps=hold_steps):
        for k in tqdm(range(1, n_steps + 1), desc="surrogate rollout", unit="step",
                      disable=not progress, mininterval=1.0):
            res = integrator.advance(x)
            x = res.states
            fallback += res.n_fallback
            tail_steps += res.n_tail_steps
            induction_steps += res.n_induction_steps
            unresolved_steps += res.n_unresolved_steps
            held_steps += res.n_held
            network_steps += ~(res.frozen | res.fallback)
            active_steps += ~res.frozen
            temps[k] = temperature(x).cpu().numpy()
            y = mass_fractions(x)
            if capture.columns:
                capture.step(k, temps, y[:, capture.columns].cpu().numpy())
            pending.append(x)
            if len(pending) == CONSERVATION_BLOCK:
                check_conservation()
            if k % record_every == 0:
                y_hist.append(y.cpu().numpy())
                t_hist.append(k * integrator.dt_s)
        check_conservation()
    return _Rollout(np.arange(n_steps + 1) * integrator.dt_s, temps, np.asarray(t_hist),
                    np.asarray(y_hist), deviations[0], deviations[1], fallback, tail_steps, network_steps,
                    time.perf_counter() - started, active_steps, induction_steps,
                    unresolved_steps, capture.values, held_steps)


class _IgnitionCapture:
    """Reads the tracked species of each condition ``delay_s`` after its own ignition (T0 + 400
    K, crossed between two steps) during a rollout, interpolated linearly between the steps
    around that time."""

    def __init__(self, conditions: list[_Condition], columns: list[int], delay_s: float,
                 dt_s: float, y0: np.ndarray):
        self.columns, self.delay_s, self.dt_s = columns, delay_s, dt_s
        self.level = np.array([c.temperature_k + IGNITION_RISE_K for c in conditions])
        self.when = np.full(len(conditions), np.nan)  # time to read at (s), once ignited
        self.previous = y0[:, columns].copy() if columns else None
        self.values: list[np.ndarray | None] = [None] * len(conditions)

    def step(self, k: int, temps: np.ndarray, tracked: np.ndarray) -> None:
        """After model step ``k``: ``temps`` ``[k+1, n_cond]`` so far, ``tracked`` ``[n_cond,
        n_tracked]`` now."""
        t_now, t_before = temps[k], temps[k - 1]
        new = np.isnan(self.when) & (t_now >= self.level) & (t_before < self.level)
        for i in np.nonzero(new)[0]:
            fraction = (self.level[i] - t_before[i]) / (t_now[i] - t_before[i])
            self.when[i] = (k - 1 + fraction) * self.dt_s + self.delay_s
        due = ~np.isnan(self.when) & (k * self.dt_s >= self.when)
        for i in np.nonzero(due)[0]:
            if self.values[i] is None:
                w = (self.when[i] - (k - 1) * self.dt_s) / self.dt_s  # in (0, 1]
                self.values[i] = (1 - w) * self.previous[i] + w * tracked[i]
        self.previous = tracked.copy()


def tracked_species(species: list[str], names: list[str] | None) -> list[str]:
    """The species read after ignition: ``names`` (InputError for one the model lacks), or
    those of :data:`AFTER_IGNITION_SPECIES` the model has."""
    if names is None:
        return [s for s in AFTER_IGNITION_SPECIES if s in species]
    unknown = [s for s in names if s not in species]
    if unknown:
        raise InputError(f"after-ignition: species '{unknown[0]}' is not one of the model's")
    return list(names)


def _after_ignition(gas: ct.Solution, c: _Condition, ref: _Reference,
                    surrogate: np.ndarray | None, tracked: list[str], columns: list[int],
                    delay_s: float) -> dict[str, list[float | None]]:
    """{species: [Cantera, surrogate, relative error]} ``delay_s`` after each side's ignition
    (empty when Cantera never ignites)."""
    if not tracked or ref.idt_s is None:
        return {}
    when = ref.idt_s + delay_s
    if when > ref.times_s[-1]:
        ref = _cantera_reference(gas, c, when * 1.01)
    cantera = [float(np.interp(when, ref.times_s, ref.mass_fractions[:, k])) for k in columns]
    out: dict[str, list[float | None]] = {}
    for j, name in enumerate(tracked):
        value = None if surrogate is None else float(surrogate[j])
        error = None if value is None else abs(value - cantera[j]) / max(cantera[j], 1e-30)
        out[name] = [cantera[j], value, error]
    return out


def _condition_result(gas: ct.Solution, c: _Condition, ref: _Reference, rollout: _Rollout,
                      i: int) -> ConditionResult:
    """Condition ``i``'s ignition delays and end temperatures, surrogate against Cantera."""
    times = rollout.times_s
    temps = rollout.temperature_k[:, i]
    ignited_k = c.temperature_k + IGNITION_RISE_K
    idt_sur = crossing_time(times, temps, ignited_k)
    # Cantera's solution at the grid times (its adaptive steps are far finer than dt near
    # ignition, so reading it there is what an exact integrator with step dt would give).
    on_grid = times <= ref.times_s[-1]
    idt_grid = crossing_time(times[on_grid],
                             np.interp(times[on_grid], ref.times_s, ref.temperature_k), ignited_k)
    t_end = times[-1]
    t_ref_end = float(np.interp(t_end, ref.times_s, ref.temperature_k)) \
        if t_end <= ref.times_s[-1] else _cantera_reference(gas, c, t_end).temperature_k[-1]
    gas.TPY = c.temperature_k, c.pressure_pa, c.y0
    gas.equilibrate("HP")
    return ConditionResult(c.temperature_k, c.pressure_atm, c.phi, ref.idt_s, idt_sur,
                           _relative_error(idt_sur, idt_grid), float(t_ref_end),
                           float(temps[-1]), float(abs(temps[-1] - t_ref_end)), float(gas.T),
                           rollout.n_steps, idt_grid, _relative_error(idt_sur, ref.idt_s),
                           int(rollout.network_steps[i]), int(rollout.active_steps[i]))


def _report(model: str, results: list[ConditionResult], rollout: _Rollout,
            seconds_cantera: float) -> ValidationReport:
    """The figures over every condition a network stepped at least once."""
    counted = [c for c in results if c.network_steps > 0]
    errors = [c.idt_rel_error for c in counted if c.idt_rel_error is not None]
    errors_cont = [c.idt_rel_error_continuous for c in counted
                   if c.idt_rel_error_continuous is not None]
    grid_errors = [e for c in counted
                   if (e := _relative_error(c.idt_cantera_grid_s, c.idt_cantera_s)) is not None]
    cell_steps = rollout.n_steps * len(results)
    return ValidationReport(
        model=model, conditions=results, rollout_steps=rollout.n_steps,
        idt_max_rel=max(errors, default=0.0), idt_mean_rel=float(np.mean(errors)) if errors else 0.0,
        equilibrium_max_k=max((c.final_t_error_k for c in counted), default=0.0),
        sum_y_max_dev=rollout.sum_y_max_dev, enthalpy_max_rel=rollout.enthalpy_max_rel,
        fallback_fraction=rollout.n_fallback / cell_steps, seconds_surrogate=rollout.seconds,
        seconds_cantera=seconds_cantera, tail_fraction=rollout.n_tail_steps / cell_steps,
        induction_fraction=rollout.n_induction_steps / cell_steps,
        unresolved_fraction=rollout.n_unresolved_steps / cell_steps,
        held_fraction=rollout.n_held_steps / cell_steps,
        idt_max_rel_continuous=max(errors_cont, default=0.0),
        idt_mean_rel_continuous=float(np.mean(errors_cont)) if errors_cont else 0.0,
        grid_idt_max_rel=max(grid_errors, default=0.0),
        outside_domain=[c.label for c in results if c.network_steps == 0])


def write_report(report: ValidationReport, out_dir: Path, rollout: _Rollout,
                 refs: list[_Reference], species: list[str]) -> None:
    """report.md, report.json, temperature.png and species.png in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    (out_dir / "report.md").write_text(report.markdown())
    times, temps = rollout.times_s, rollout.temperature_k
    n = len(report.conditions)
    cols = min(n, 9)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), squeeze=False)
    for i, c in enumerate(report.conditions):
        ax = axes[i // cols][i % cols]
        ref = refs[i]
        t_show = 3.0 * (c.idt_cantera_s or times[-1] / 3.0)
        m = times <= t_show
        shown = ref.times_s <= t_show
        ax.plot(ref.times_s[shown] * 1e3, ref.temperature_k[shown], "k-", lw=1.5, label="Cantera")
        ax.plot(times[m] * 1e3, temps[m, i], "r--", lw=1.2, label="surrogate")
        ax.set_title(f"{c.temperature_k:g} K, {c.pressure_atm:g} atm, φ={c.phi:g}", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.supxlabel("t (ms)")
    fig.supylabel("T (K)")
    fig.tight_layout()
    fig.savefig(out_dir / "temperature.png", dpi=110)
    plt.close(fig)
    # Key species of the first few conditions.
    key = [s for s in ("H2O", "OH", "H", "O", "HO2", "CO2", "CO") if s in species][:4]
    fig, axes = plt.subplots(1, len(key), figsize=(3.2 * len(key), 2.8), squeeze=False)
    show = list(range(min(n, 3)))
    for j, s in enumerate(key):
        ax = axes[0][j]
        k = species.index(s)
        for i in show:
            ref = refs[i]
            t_show = 3.0 * (report.conditions[i].idt_cantera_s or times[-1] / 3.0)
            sel = ref.times_s <= t_show
            ax.semilogy(ref.times_s[sel] * 1e3, np.maximum(ref.mass_fractions[sel, k], 1e-12),
                        "k-", lw=1)
            sel2 = rollout.recorded_times_s <= t_show
            ax.semilogy(rollout.recorded_times_s[sel2] * 1e3,
                        np.maximum(rollout.recorded_y[sel2, i, k], 1e-12), "r--", lw=1)
        ax.set_title(f"Y {s} (black Cantera, red surrogate)", fontsize=7)
        ax.set_xlabel("t (ms)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "species.png", dpi=110)
    plt.close(fig)
