"""Reduction targets: ignition delay, laminar flame speed, PSR extinction, equilibrium temperature.

One condition at a time (:func:`run_condition`), for the detailed mechanism and for every reduced
candidate alike, so that both use the same reactor, tolerances and criteria (flames: ``flame.py``,
stirred reactors: ``psr.py``). The detailed mechanism's values, the states the graph methods sample
and its flame solutions (the candidates' starting point) are computed once per (mechanism sha256,
conditions, settings) and cached on disk (:func:`reference_targets`); a change to any of them makes
a new cache entry, never a stale reuse.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cantera as ct
import numpy as np

from mechanisms.atomic_io import atomic_write_npz, atomic_write_text
from mechanisms.cache import cache_root
from mechanisms.errors import InputError, cantera_message
from mechanisms.ignition import IGNITION_RISE_K, crossing_time
from mechanisms.loading import has_transport, solution_from_yaml
from mechanisms.reactor import Tolerances, reactor_network
from mechanisms.reduction.config import Condition, ReductionConfig, SimulationSettings
from mechanisms.reduction.flame import FlameProfile, flame_speed
from mechanisms.reduction.profiles import SAMPLE_POINTS, sample_profile
from mechanisms.reduction.psr import SHORTEST_TAU_S, extinction_residence_time
from mechanisms.state import state_of_gas, state_width

CACHE_VERSION = 2


@dataclass
class ConditionResult:
    """The outcome of one condition for one mechanism.

    ``value``: ignition delay (s), flame speed (m/s) or extinction residence time (s), None when
    the run failed or did not ignite (burn); ``status``: ``"ok"``, ``"no-ignition"`` or
    ``"failed"``; ``t_eq_k``: equilibrium temperature (K) of the initial mixture (UV for constant
    volume, HP otherwise), None when not computed; ``samples``: ``[SAMPLE_POINTS, 2 + ns]`` states
    ``[T, P, Y...]`` along a detailed run; ``profile``: a detailed flame's solution.
    """

    value: float | None
    status: str
    message: str = ""
    t_eq_k: float | None = None
    samples: np.ndarray | None = None
    profile: FlameProfile | None = None
    seconds: float = 0.0


def set_initial_state(gas: ct.Solution, cond: Condition) -> None:
    """Set ``gas`` to the initial state of ``cond`` (species absent from ``gas`` must be absent)."""
    gas.TPY = cond.temperature_k, cond.pressure_pa, cond.mass_fractions


def equilibrium_temperature(gas: ct.Solution, cond: Condition) -> float:
    """Adiabatic equilibrium temperature (K) of the initial mixture of ``cond``: UV at constant
    volume, HP otherwise (flames and stirred reactors included). Raises ``ct.CanteraError`` when
    the solver fails."""
    set_initial_state(gas, cond)
    with warnings.catch_warnings():
        # hot high-pressure mixtures end a few K above the NASA-7 fits' 3000 K; that is expected
        warnings.filterwarnings("ignore", message=".*outside valid range.*")
        gas.equilibrate("UV" if cond.kind == "constant volume" else "HP")
    return float(gas.T)


def run_condition(gas: ct.Solution, cond: Condition, settings: SimulationSettings,
                  reference: float | None = None, equilibrium: bool = False,
                  sample: bool = False, guess: FlameProfile | None = None) -> ConditionResult:
    """Simulate ``cond`` with ``gas``; never raises for a Cantera failure (status ``"failed"``).

    ``reference`` is the detailed value: a reduced ignition run gives up (``"no-ignition"``) at
    ``settings.cap_factor × reference``, a PSR search at ``reference / cap_factor``. ``sample``
    keeps states along the run for the graph methods (detailed runs only; an ignition run then
    continues to near equilibrium). ``guess`` starts a flame from the detailed solution.
    ``equilibrium`` (implied by ``sample``) computes the equilibrium temperature too.
    """
    started = time.perf_counter()
    t_eq = None
    try:
        if equilibrium or sample:
            t_eq = equilibrium_temperature(gas, cond)
        if cond.kind == "flame":
            result = _flame(gas, cond, settings, guess)
        elif cond.kind == "psr":
            result = _psr(gas, cond, settings, reference)
        else:
            result = _ignition(gas, cond, settings, reference, t_eq if sample else None)
    except ct.CanteraError as exc:
        result = ConditionResult(None, "failed", cantera_message(exc))
    result.t_eq_k = t_eq
    result.seconds = time.perf_counter() - started
    return result


def _ignition(gas: ct.Solution, cond: Condition, settings: SimulationSettings,
              reference: float | None, t_eq: float | None) -> ConditionResult:
    """Integrate until the ignition criterion is met (then stop, unless sampling)."""
    set_initial_state(gas, cond)
    reactor, net = reactor_network(gas, Tolerances(settings.rtol, settings.atol),
                                   constant_volume=cond.kind == "constant volume", max_steps=None)
    max_steps = cond.max_steps or settings.max_steps
    t_end = cond.end_time_s or settings.end_time_s
    if reference is not None:
        t_end = min(t_end, settings.cap_factor * reference)
    t0 = cond.temperature_k
    level = t0 + IGNITION_RISE_K
    max_slope = settings.ignition_criterion == "max-dTdt"
    sampling = t_eq is not None
    times = [0.0]
    temps = [t0]
    states: list[np.ndarray] = [state_of_gas(gas)] if sampling else []
    crossed = None
    best_slope, best_time = 0.0, None
    for _ in range(max_steps):
        t = net.step()
        temp = reactor.T
        slope = (temp - temps[-1]) / (t - times[-1]) if t > times[-1] else 0.0
        if slope > best_slope:
            best_slope, best_time = slope, 0.5 * (t + times[-1])
        times.append(t)
        temps.append(temp)
        if sampling:
            states.append(state_of_gas(reactor.phase))
        if crossed is None and temp >= level:
            crossed = crossing_time(np.array(times[-2:]), np.array(temps[-2:]), level)
        if crossed is not None:
            done = not max_slope or slope < 0.2 * best_slope
            if sampling:
                done = done and (t_eq - temp < 0.01 * (t_eq - t0) or t > 5 * crossed)
            if done:
                break
        if t > t_end:
            break
    else:
        if crossed is None:
            return ConditionResult(None, "no-ignition", f"no ignition within {max_steps} steps")
    if crossed is None:
        return ConditionResult(None, "no-ignition", f"no ignition within {t_end:.3g} s")
    value = best_time if max_slope else crossed
    samples = sample_profile(np.array(temps), np.vstack(states)) if sampling else None
    return ConditionResult(float(value), "ok", samples=samples)


def _flame(gas: ct.Solution, cond: Condition, settings: SimulationSettings,
           guess: FlameProfile | None) -> ConditionResult:
    """Laminar burning velocity (m/s) of a freely propagating, mixture-averaged flame."""
    if not has_transport(gas):
        return ConditionResult(None, "failed", "the mechanism has no transport data")
    res = flame_speed(gas, cond, settings.min_flame_speed_m_s, guess)
    return ConditionResult(res.speed_m_s, res.status, res.message, samples=res.samples,
                           profile=res.profile)


def _psr(gas: ct.Solution, cond: Condition, settings: SimulationSettings,
         reference: float | None) -> ConditionResult:
    """Extinction residence time (s) of a perfectly stirred reactor."""
    shortest = reference / settings.cap_factor if reference is not None else SHORTEST_TAU_S
    res = extinction_residence_time(gas, cond, Tolerances(settings.rtol, settings.atol), shortest)
    return ConditionResult(res.residence_time_s, res.status, res.message, samples=res.samples)


@dataclass
class ReferenceTargets:
    """The detailed mechanism's values per condition, in the order of ``ReductionConfig.conditions``.

    ``values`` ``[nc]``: ignition delay (s), flame speed (m/s) or extinction residence time (s);
    ``t_eq_k`` ``[nc]`` (K); ``samples`` ``[nc, SAMPLE_POINTS, 2 + ns]`` states for the graph
    methods (every condition contributes: ignition runs, flames and stirred reactors alike);
    ``profiles``: the flame solutions by condition index, where candidates' flames start.
    """

    key: str
    labels: list[str]
    values: np.ndarray
    t_eq_k: np.ndarray
    samples: np.ndarray
    seconds: float
    cached: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    profiles: dict[int, FlameProfile] = field(default_factory=dict)

@dataclass(frozen=True)
class SharedContext:
    """What every task of one evaluation shares (sent once per worker with ``Executor.share``).

    A wrapper, not a bare dict: Dask scatters a dict value by value under the dict's keys, so a
    second context with the same keys would silently reuse the first one's data.
    """

    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def default_cache_dir() -> Path:
    """``$DEEPKIN_CACHE_DIR/reduction`` or ``~/.cache/deepkin/reduction``."""
    return cache_root() / "reduction"


def detailed_task(ctx: SharedContext, index: int) -> ConditionResult:
    """Worker task: condition ``index`` with the detailed mechanism, sampled for the graph methods."""
    gas = solution_from_yaml(ctx["yaml_text"], ctx["phase"], ctx["sha256"])
    cond = Condition.from_dict(ctx["conditions"][index])
    settings = SimulationSettings(**ctx["settings"])
    return run_condition(gas, cond, settings, equilibrium=True, sample=True)


def reference_targets(config: ReductionConfig, executor, cache_dir: Path | None = None,
                      progress: bool = False) -> ReferenceTargets:
    """The detailed values of ``config``, from the cache or computed (and then cached).

    Raises :class:`InputError` naming the condition when the detailed mechanism fails or does not
    ignite (burn, go out) there.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = config.conditions_key()
    json_path = cache_dir / f"{key}.json"
    npz_path = cache_dir / f"{key}.npz"
    cached = _read_cache(key, json_path, npz_path)
    if cached is not None:
        return cached
    results, seconds = _run_detailed(config, executor, progress)
    conds = config.conditions
    _check_detailed(conds, results)
    mech = config.mechanism
    samples = (np.stack([results[i].samples for i in range(len(conds))]) if conds
               else np.zeros((0, SAMPLE_POINTS, state_width(mech.n_species))))
    profiles = {i: res.profile for i, res in results.items() if res.profile is not None}
    values = np.array([results[i].value for i in range(len(conds))], dtype=float)
    t_eq = np.array([results[i].t_eq_k for i in range(len(conds))], dtype=float)
    meta = {"version": CACHE_VERSION, "key": key, "mechanism_sha256": mech.sha256,
            "phase": mech.phase, "labels": [c.label for c in conds],
            "conditions": [c.to_dict() for c in conds], "settings": config.simulation.to_dict(),
            "cantera_version": ct.__version__, "values": values.tolist(), "t_eq_k": t_eq.tolist(),
            "seconds": seconds}
    cache_dir.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for i, p in profiles.items() for k, v in p.arrays(f"profile{i}.").items()}
    atomic_write_npz(npz_path, samples=samples, **arrays)
    atomic_write_text(json_path, json.dumps(meta, indent=1))
    return ReferenceTargets(key, meta["labels"], values, t_eq, samples, seconds, meta=meta,
                            profiles=profiles)


def _read_cache(key: str, json_path: Path, npz_path: Path) -> ReferenceTargets | None:
    """The cache entry ``key``, or None when it is missing, damaged or of another version."""
    if not (json_path.is_file() and npz_path.is_file()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        with np.load(npz_path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if meta.get("version") == CACHE_VERSION and meta.get("key") == key:
            profiles = {i: FlameProfile.from_arrays(arrays, f"profile{i}.")
                        for i, c in enumerate(meta["conditions"]) if c["kind"] == "flame"}
            return ReferenceTargets(key, meta["labels"], np.array(meta["values"]),
                                    np.array(meta["t_eq_k"]), arrays["samples"],
                                    meta["seconds"], cached=True, meta=meta, profiles=profiles)
    except (OSError, ValueError, KeyError):
        pass  # a damaged entry is recomputed and replaced
    return None


def _run_detailed(config: ReductionConfig, executor,
                  progress: bool) -> tuple[dict[int, ConditionResult], float]:
    """Every condition of ``config`` with the detailed mechanism through ``executor``, and the
    seconds the runs took."""
    from tqdm import tqdm

    mech = config.mechanism
    conds = config.conditions
    ctx = {"yaml_text": mech.yaml_text, "phase": mech.phase, "sha256": mech.sha256,
           "conditions": [c.to_dict() for c in conds], "settings": config.simulation.to_dict()}
    handle = executor.share(SharedContext(ctx))
    started = time.perf_counter()
    results: dict[int, ConditionResult] = {}
    jobs = [(i, (handle, i)) for i in range(len(conds))]
    bar = tqdm(total=len(conds), desc="detailed", unit="cond", leave=False,
               disable=None if progress else True)
    for i, res in executor.map_unordered(detailed_task, jobs):
        results[i] = res
        bar.update()
    bar.close()
    return results, time.perf_counter() - started


def _check_detailed(conds: list[Condition], results: dict[int, ConditionResult]) -> None:
    """:class:`InputError` for the first condition where the detailed mechanism failed or did not
    ignite (or burn)."""
    for i, cond in enumerate(conds):
        res = results[i]
        if res.status != "ok":
            what, fix = {"flame": ("has no flame", "change its mixture"),
                         "psr": ("does not burn or never goes out", "change its residence-time")}.get(
                cond.kind, ("does not ignite", "raise its end-time"))
            if res.status == "failed":
                what = f"fails ({res.message})"
            raise InputError(f"conditions: the detailed mechanism {what} at '{cond.label}'; "
                             f"remove this condition (or {fix})")
