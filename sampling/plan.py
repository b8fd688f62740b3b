"""Turning a :class:`SamplingConfig` into task lists: the manifold stage, then the scatter stage."""

from __future__ import annotations

import itertools

import cantera as ct
import numpy as np

from mechanisms.composition import mixture_mass_fractions, parse_composition
from mechanisms.dataset_file import source_code
from mechanisms.errors import InputError
from mechanisms.loading import Mechanism, has_transport
from mechanisms.state import ONE_ATM_PA
from mechanisms.states_file import StatesFileFacts, load_solver_states
from sampling.config import COMMON_DILUENTS, SCATTER_SOURCES, SamplingConfig
from sampling.profiles import split_count
from sampling.tasks import TaskSpec

__all__ = ["split_count", "check_against_mechanism", "plan_manifold", "load_run_states",
           "plan_solver_states", "plan_scatter"]


def check_against_mechanism(config: SamplingConfig, mech: Mechanism) -> list[int]:
    """Checks that need the mechanism; returns the diluent species indices.

    Raises :class:`InputError` for unknown species, temperatures outside the thermo range, and
    unknown diluents.
    """
    gas = mech.solution()
    parse_composition(config.fuel, gas.species_names, "fuel")
    ox = parse_composition(config.oxidizer, gas.species_names, "oxidizer")
    for i, fuel in enumerate(config.counterflow_fuels):
        parse_composition(fuel, gas.species_names, f"counterflow.fuels[{i}]")
    for field, temps in (("temperature_k", config.temperature_k),
                         ("free_flame.temperature_k", config.free_flame.temperature_k),
                         ("counterflow.fuel_temperature_k", [config.counterflow.fuel_temperature_k]),
                         ("counterflow.oxidizer_temperature_k",
                          [config.counterflow.oxidizer_temperature_k])):
        for t in temps:
            if not gas.min_temp <= t <= gas.max_temp:
                raise InputError(f"{field}: {t:g} K lies outside the thermo range of {mech.source} "
                                 f"({gas.min_temp:g}–{gas.max_temp:g} K)")
    for phi in sorted(set(config.phi) | set(config.free_flame_phis)):
        mixture_mass_fractions(gas, config.fuel, config.oxidizer, phi)
    if config.diluents is None:
        return [gas.species_index(s) for s in ox if s in COMMON_DILUENTS]
    return [mech.species_index(s, "diluents") for s in config.diluents]


def _composition_y(gas: ct.Solution, comp: str, field: str) -> list[float]:
    gas.TPX = 300.0, ONE_ATM_PA, parse_composition(comp, gas.species_names, field)
    return gas.Y.tolist()


def plan_manifold(config: SamplingConfig, mech: Mechanism, run: int, notes: list[str]
                  ) -> list[TaskSpec]:
    """Tasks of the first stage: autoignition cases, free flames, counterflow flames."""
    gas = mech.solution()
    specs: list[TaskSpec] = []
    y0 = {phi: mixture_mass_fractions(gas, config.fuel, config.oxidizer, phi).tolist()
          for phi in sorted(set(config.phi) | set(config.free_flame_phis))}

    def add(kind: str, cases: list[dict]) -> None:
        rows = config.rows.get(kind, 0)
        if rows <= 0 or not cases:
            return
        for i, (params, n) in enumerate(zip(cases, split_count(rows, len(cases)))):
            if n > 0:
                specs.append(TaskSpec(len(specs), f"r{run}/{kind}/{i:04d}", kind, n,
                                      (config.seed, source_code(kind), i), params))

    autoignition = [{"temperature_k": t, "pressure_pa": p * ONE_ATM_PA, "y0": y0[phi]}
                    for t, p, phi in itertools.product(config.temperature_k, config.pressure_atm,
                                                       config.phi)]
    flames_wanted = config.rows.get("free_flame", 0) + config.rows.get("counterflow", 0)
    if flames_wanted and not has_transport(mech.solution()):
        notes.append(f"{mech.source} ({mech.phase}) has no transport data: free_flame and "
                     "counterflow rows skipped")
        add("autoignition", autoignition)
        return specs
    # The longest tasks first (a counterflow sweep solves ~15 flames and labels a whole share of
    # rows; a free flame costs 10-60 s on GRI-3.0; an ignition profile 0.2 s): the workers
    # start them early, and no worker runs one alone at the end of the stage.
    free_flames = [{"temperature_k": t, "pressure_pa": p * ONE_ATM_PA, "y0": y0[phi],
                    "transport": transport}
                   for t, p, phi, transport in itertools.product(
                       config.free_flame.temperature_k, config.free_flame_pressures_atm,
                       config.free_flame_phis, config.free_flame.transport)]
    ox_y = _composition_y(gas, config.oxidizer, "oxidizer")
    cf = config.counterflow
    cases = []
    for i, fuel in enumerate(config.counterflow_fuels):
        fuel_y = _composition_y(gas, fuel, f"counterflow.fuels[{i}]")
        for p in config.counterflow_pressures_atm:
            common = {"fuel_y": fuel_y, "oxidizer_y": ox_y, "pressure_pa": p * ONE_ATM_PA}
            if cf.to_extinction:  # one sweep from the lowest strain to extinction
                cases.append({**common, "strain_rate_s": min(cf.strain_rate_s), "sweep": True})
            else:
                cases.extend({**common, "strain_rate_s": a} for a in cf.strain_rate_s)
    add("counterflow", cases)
    add("free_flame", free_flames)
    add("autoignition", autoignition)
    return specs


def load_run_states(config: SamplingConfig, mech: Mechanism
                    ) -> tuple[np.ndarray, list[StatesFileFacts], list[str]] | None:
    """The states files of the ``solver_states`` source, read and checked (InputError for a bad
    file or one with no labellable state): ``(states, facts, notes)``; None without such rows.
    Called before the output is touched, so that a bad file leaves no dataset behind."""
    if config.rows.get("solver_states", 0) <= 0:
        return None
    opts = config.solver_states
    if not opts.files:
        raise InputError(f"solver_states.files: rows.solver_states is "
                         f"{config.rows['solver_states']} but no states file is given "
                         "(solver_states.files or --solver-states)")
    states, facts, notes = load_solver_states(opts.files, mech.solution(), opts.min_temperature_k)
    if len(states) == 0:
        raise InputError("solver_states.files: no state of these files can be labelled ("
                         + "; ".join(notes) + ")" if notes else
                         "solver_states.files: the files hold no states")
    return states, facts, notes


def plan_solver_states(config: SamplingConfig, states: np.ndarray, run: int, first_index: int,
                       notes: list[str]) -> list[TaskSpec]:
    """Tasks of the ``solver_states`` source (first stage, after the canonical cases):
    ``rows.solver_states`` of ``states`` drawn without replacement (all of them when there are
    fewer), in chunks of ``task_rows``."""
    rows = config.rows.get("solver_states", 0)
    if len(states) <= rows:
        if len(states) < rows:
            notes.append(f"solver_states: the files hold {len(states)} distinct labellable "
                         f"states, fewer than rows.solver_states ({rows}): all are taken")
        chosen = states
    else:
        pick = np.random.default_rng(np.random.SeedSequence(
            [config.seed, source_code("solver_states"), 0]))
        band_k = config.solver_states.band_k
        if band_k is None:
            index = pick.choice(len(states), rows, replace=False)
        else:
            index = _draw_per_band(np.floor(states[:, 0] / band_k).astype(np.int64), rows, pick)
        chosen = states[np.sort(index)]
    chunks = np.array_split(chosen, -(-len(chosen) // config.task_rows))
    return [TaskSpec(first_index + i, f"r{run}/solver_states/{i:04d}", "solver_states",
                     len(chunk), (config.seed, source_code("solver_states"), i), {"states": chunk})
            for i, chunk in enumerate(chunks)]


def _draw_per_band(bands: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` indices drawn without replacement, as evenly over the distinct values of
    ``bands`` as their sizes allow (a band with fewer rows than its share gives all of them and
    the rest is shared among the others)."""
    groups = [np.flatnonzero(bands == b) for b in np.unique(bands)]
    sizes = np.array([len(g) for g in groups])
    take = np.zeros(len(groups), dtype=np.int64)
    left = rows
    while left > 0:
        open_ = np.flatnonzero(take < sizes)
        share = split_count(left, len(open_))
        for g, n in zip(open_, share):
            extra = min(n, sizes[g] - take[g])
            take[g] += extra
            left -= extra
    return np.concatenate([rng.choice(g, n, replace=False) for g, n in zip(groups, take) if n])


def plan_scatter(config: SamplingConfig, run: int, first_index: int,
                 manifold_states: np.ndarray) -> list[TaskSpec]:
    """Tasks of the second stage: multi-scale, perturbed, EMCS, equilibrium-approach and rollout
    draws."""
    specs: list[TaskSpec] = []
    for kind in SCATTER_SOURCES:
        rows = config.rows.get(kind, 0)
        if rows <= 0:
            continue
        n_tasks = -(-rows // config.task_rows)
        for i, n in enumerate(split_count(rows, n_tasks)):
            seed = (config.seed, source_code(kind), i)
            params: dict = {}
            if kind == "multiscale":
                params = {"level_start": i / n_tasks, "level_stop": (i + 1) / n_tasks}
            elif kind in ("perturbed", "equilibrium", "rollout"):
                # a rollout task's rows are trajectories of rollout.steps rows, one start each
                pick = np.random.default_rng(np.random.SeedSequence([*seed, 1]))
                if kind == "rollout":  # distinct start states, one per trajectory
                    starts = min(-(-n // config.rollout.steps), len(manifold_states))
                    chosen = pick.choice(len(manifold_states), starts, replace=False)
                else:
                    chosen = pick.integers(0, len(manifold_states), min(n, len(manifold_states)))
                params = {"base_states": manifold_states[chosen]}
            specs.append(TaskSpec(first_index + len(specs), f"r{run}/{kind}/{i:04d}", kind, n,
                                  seed, params))
    return specs
