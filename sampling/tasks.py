"""Worker-side sampling tasks: each draws states from one source and labels them.

A task receives a :class:`TaskSpec` (small, picklable) and the shared :class:`TaskContext`
(mechanism YAML text + sha256, labelling settings, manifold ranges); it rebuilds the mechanism's
``ct.Solution`` once per worker process and returns a :class:`TaskResult`. Deterministic Cantera
failures (a flame that does not converge) come back as a result with a status, not as an
exception, so that they are recorded and not retried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.dataset_file import source_code
from mechanisms.errors import cantera_message
from mechanisms.loading import solution_from_yaml
from mechanisms.reactor import EVOLVE_TOLERANCES, ReactorStep, Tolerances, reactor_network, restart
from mechanisms.state import state_of_gas, state_width, temperature
from sampling.equilibrium import draw_equilibrium_approach
from sampling.manifold import (
    autoignition_profile,
    counterflow_profile,
    counterflow_sweep,
    free_flame_profile,
    log_time,
)
from sampling.multiscale import (
    ManifoldRanges,
    RateLimits,
    draw_log_uniform,
    draw_multiscale,
    perturb,
    rate_filter,
)
from sampling.profile_cache import cached_profiles, profile_key
from sampling.profiles import draw_along_profile, split_count

MAX_FILTER_ROUNDS = 20


@dataclass
class TaskSpec:
    """One unit of work: ``rows`` states of source ``kind``, seeded by ``seed``."""

    index: int
    task_id: str
    kind: str
    rows: int
    seed: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskContext:
    """What every task of a run shares; sent once to each worker."""

    yaml_text: str
    sha256: str
    phase: str
    dt_s: float
    rtol: float
    atol: float
    options: dict[str, Any]  # the sampling config as a dict
    ranges: dict[str, Any] | None = None  # ManifoldRanges.to_dict(), for the second stage
    limits: dict[str, Any] | None = None  # RateLimits.to_dict(), for the filter


@dataclass
class TaskResult:
    task_id: str
    inputs: np.ndarray
    targets: np.ndarray
    source: int
    status: str
    seconds: float


def execute_task(spec: TaskSpec, ctx: TaskContext) -> TaskResult:
    """Run one task (in a worker process); never raises for a Cantera failure."""
    started = time.perf_counter()
    gas = solution_from_yaml(ctx.yaml_text, ctx.phase, ctx.sha256)
    rng = np.random.default_rng(np.random.SeedSequence(list(spec.seed)))
    width = state_width(gas.n_species)
    empty = np.empty((0, width))
    # One reactor per task, restarted per state: a task's rows depend only on its own states
    # (in their fixed order), so a dataset still comes out the same whatever worker labels it.
    stepper = ReactorStep(gas, ctx.dt_s, Tolerances(ctx.rtol, ctx.atol), reuse=True)
    try:
        if spec.kind == "rollout":
            inputs, targets, n_failed, note = _label_rollouts(spec, ctx, gas, rng, stepper)
        else:
            states, note = _DRAW[spec.kind](spec, ctx, gas, rng)
            inputs, targets, n_failed = stepper.advance_all(states)
    except ct.CanteraError as exc:
        return TaskResult(spec.task_id, empty, empty.copy(), source_code(spec.kind),
                          f"failed: {cantera_message(exc)}", time.perf_counter() - started)
    status = "ok"
    notes = [n for n in (note, f"{n_failed} state(s) failed to label" if n_failed else "") if n]
    if notes:
        status = "partial: " + "; ".join(notes)
    return TaskResult(spec.task_id, inputs, targets, source_code(spec.kind), status,
                      time.perf_counter() - started)


def _draw_autoignition(spec, ctx, gas, rng):
    opts = ctx.options["autoignition"]
    p = spec.params
    t, states, rate = autoignition_profile(gas, p["temperature_k"], p["pressure_pa"],
                                           np.asarray(p["y0"]), t_max_s=opts["t_max_s"],
                                           settle_k=opts["settle_k"])
    return draw_along_profile(t, states, rate, spec.rows, opts["activity_weight"], rng,
                              uniform_coordinate=log_time(t)), ""


def _flame_profiles(spec: TaskSpec, ctx: TaskContext, solve) -> list:
    """``solve()``'s flame profiles, or the ones a run with the same mechanism, case and solver
    options stored (:mod:`sampling.profile_cache`); the draw options do not enter the key."""
    opts = {k: v for k, v in ctx.options[spec.kind].items() if k != "activity_weight"}
    key = profile_key(spec.kind, ctx.sha256, spec.params, opts)
    return cached_profiles(key, solve)


def _draw_free_flame(spec, ctx, gas, rng):
    opts = ctx.options["free_flame"]
    p = spec.params
    [(_, z, states, hrr)] = _flame_profiles(spec, ctx, lambda: [(0.0, *free_flame_profile(
        gas, p["temperature_k"], p["pressure_pa"], np.asarray(p["y0"]), width_m=opts["width_m"],
        transport=p.get("transport")))])
    return draw_along_profile(z, states, hrr, spec.rows, opts["activity_weight"], rng), ""


def _draw_counterflow(spec, ctx, gas, rng):
    opts = ctx.options["counterflow"]
    p = spec.params
    if p.get("sweep"):
        return _draw_counterflow_sweep(spec, ctx, opts, gas, rng)
    [(_, z, states, hrr)] = _flame_profiles(spec, ctx, lambda: [(p["strain_rate_s"], *counterflow_profile(
        gas, np.asarray(p["fuel_y"]), np.asarray(p["oxidizer_y"]), p["pressure_pa"],
        p["strain_rate_s"], opts["fuel_temperature_k"], opts["oxidizer_temperature_k"],
        opts["width_m"]))])
    return draw_along_profile(z, states, hrr, spec.rows, opts["activity_weight"], rng), ""


def _draw_counterflow_sweep(spec, ctx, opts, gas, rng):
    """Rows from every burning flame of a strain sweep to extinction, split evenly."""
    p = spec.params
    flames = _flame_profiles(spec, ctx, lambda: counterflow_sweep(
        gas, np.asarray(p["fuel_y"]), np.asarray(p["oxidizer_y"]), p["pressure_pa"],
        p["strain_rate_s"], opts["fuel_temperature_k"], opts["oxidizer_temperature_k"],
        opts["width_m"], opts["sweep_factor"], opts["extinction_tolerance"]))
    parts = [draw_along_profile(z, states, hrr, n, opts["activity_weight"], rng)
             for (_, z, states, hrr), n in zip(flames, split_count(spec.rows, len(flames)))
             if n > 0]
    return np.concatenate(parts), ""


def _filtered(draw, n: int, ctx: TaskContext, gas: ct.Solution) -> tuple[np.ndarray, str]:
    """Call ``draw(k)`` until ``n`` states pass the rate filter (bounded number of rounds)."""
    limits = RateLimits.from_dict(ctx.limits) if ctx.limits else None
    factor = ctx.options["filter"]["rate_factor"]
    kept: list[np.ndarray] = []
    have = 0
    drawn = 0
    for _ in range(MAX_FILTER_ROUNDS):
        if have >= n:
            break
        batch = draw(max(2 * (n - have), 8))
        drawn += len(batch)
        batch = batch[rate_filter(gas, batch, limits, factor)]
        kept.append(batch)
        have += len(batch)
    states = np.concatenate(kept)[:n] if kept else np.empty((0, state_width(gas.n_species)))
    note = "" if len(states) == n else f"rate filter kept {len(states)} of {n} after {drawn} draws"
    return states, note


def _draw_multiscale(spec, ctx, gas, rng):
    ranges = ManifoldRanges.from_dict(ctx.ranges)
    lo, hi = spec.params["level_start"], spec.params["level_stop"]
    return _filtered(lambda k: draw_multiscale(ranges, k, lo, hi, rng), spec.rows, ctx, gas)


def _draw_perturbed(spec, ctx, gas, rng):
    return _perturbed_states(np.asarray(spec.params["base_states"]),
                             ctx.options["perturbed"]["alpha"], spec.rows, ctx, gas, rng)


def _perturbed_states(base: np.ndarray, alpha: float, n: int, ctx: TaskContext,
                      gas: ct.Solution, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``n`` states drawn from ``base`` and perturbed by ``alpha`` (:func:`perturb`, the
    manifold's T span), kept by the rate filter."""
    ranges = ManifoldRanges.from_dict(ctx.ranges)
    span = ranges.temperature_k[1] - ranges.temperature_k[0]
    bounds = (gas.min_temp + 1.0, gas.max_temp - 1.0)

    def draw(k: int) -> np.ndarray:
        picks = base[rng.integers(0, len(base), k)]
        return perturb(picks, alpha, span, rng, bounds)

    return _filtered(draw, n, ctx, gas)


def _draw_emcs(spec, ctx, gas, rng):
    """Monte Carlo samples in the manifold box, each evolved along its own trajectory."""
    ranges = ManifoldRanges.from_dict(ctx.ranges)
    opts = ctx.options["emcs"]
    margin = ctx.options["multiscale"]["margin_decades"]
    per = opts["points_per_trajectory"]
    n_seeds = -(-3 * spec.rows // (2 * per)) + 1  # extra seeds: some evolved states are dropped
    seeds, note = _filtered(lambda k: draw_log_uniform(ranges, k, rng, margin), n_seeds, ctx, gas)
    times = np.concatenate([[0.0], np.geomspace(ctx.dt_s, opts["evolve_time_s"], per - 1)]) \
        if per > 1 else np.array([0.0])
    reactor, net = reactor_network(gas, EVOLVE_TOLERANCES, max_steps=None)
    out = []
    failed = 0
    for seed in seeds:
        try:
            restart(reactor, net, seed)
            for t in times:
                if t > 0:
                    net.advance(t)
                out.append(state_of_gas(gas))
        except ct.CanteraError:
            failed += 1
    states = np.asarray(out).reshape(-1, state_width(gas.n_species))
    # Evolved states stay only where the manifold's temperatures and rates say they belong.
    t_lo, t_hi = ranges.temperature_k
    margin_k = 0.1 * (t_hi - t_lo)
    in_window = (np.all(np.isfinite(states), axis=1)
                 & (temperature(states) >= max(t_lo - margin_k, gas.min_temp))
                 & (temperature(states) <= min(t_hi + margin_k, gas.max_temp)))
    states = states[in_window]
    limits = RateLimits.from_dict(ctx.limits) if ctx.limits else None
    states = states[rate_filter(gas, states, limits, ctx.options["filter"]["rate_factor"])]
    if len(states) < spec.rows:
        note = "; ".join(n for n in (note, f"kept {len(states)} of {spec.rows} evolved states")
                         if n)
    states = states[:spec.rows]
    if failed:
        note = "; ".join(n for n in (note, f"{failed} trajectories failed") if n)
    return states, note


def _draw_equilibrium(spec, ctx, gas, rng):
    base = np.asarray(spec.params["base_states"])
    opts = ctx.options["equilibrium"]
    states = draw_equilibrium_approach(gas, base, spec.rows, rng, opts["closest"],
                                       opts["beyond_fraction"], spread=opts.get("spread", 0.0))
    note = "" if len(states) == spec.rows else \
        f"equilibrium: {len(states)} of {spec.rows} states (Cantera failed on the rest)"
    return states, note


def _draw_solver_states(spec, ctx, gas, rng):
    return np.asarray(spec.params["states"], dtype=np.float64), ""


def _label_rollouts(spec: TaskSpec, ctx: TaskContext, gas: ct.Solution,
                    rng: np.random.Generator, stepper: ReactorStep
                    ) -> tuple[np.ndarray, np.ndarray, int, str]:
    """``(inputs, targets, n_failed, note)`` of ``spec.rows`` rows along trajectories of
    ``rollout.steps`` consecutive labelled steps, one trajectory after another (a row's target
    is the next row's input, up to Cantera's renormalisation of Y: ~1 ulp), from the task's base
    states (perturbed as ``perturbed`` does when ``rollout.alpha`` > 0). A step that fails ends
    its trajectory there (counted in ``n_failed``); the last trajectory is cut at ``spec.rows``."""
    opts = ctx.options["rollout"]
    steps = int(opts["steps"])
    base = np.asarray(spec.params["base_states"])
    wanted = -(-spec.rows // steps)
    note = ""
    if opts["alpha"] > 0:
        starts, note = _perturbed_states(base, opts["alpha"], wanted, ctx, gas, rng)
    else:
        starts = base[:wanted]
        if len(starts) < wanted:
            note = (f"rollout: {len(starts)} start states for {wanted} trajectories (the "
                    "manifold holds fewer)")
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    failed = 0
    for start in starts:
        state = start
        for _ in range(steps):
            if len(inputs) == spec.rows:
                break
            try:
                row_in, row_out = stepper.advance(state)
            except ct.CanteraError:
                failed += 1
                break
            if not (np.all(np.isfinite(row_in)) and np.all(np.isfinite(row_out))):
                failed += 1
                break
            inputs.append(row_in)
            targets.append(row_out)
            state = row_out
    width = state_width(gas.n_species)
    if not inputs:
        return np.empty((0, width)), np.empty((0, width)), failed, note
    return np.asarray(inputs), np.asarray(targets), failed, note


_DRAW = {
    "autoignition": _draw_autoignition,
    "free_flame": _draw_free_flame,
    "counterflow": _draw_counterflow,
    "multiscale": _draw_multiscale,
    "perturbed": _draw_perturbed,
    "emcs": _draw_emcs,
    "equilibrium": _draw_equilibrium,
    "solver_states": _draw_solver_states,
}
