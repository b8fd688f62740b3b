"""The sampling configuration: one dataclass, read from YAML and/or command-line flags.

Units are SI except where the key names its unit (``pressure_atm``). Every check raises
:class:`InputError` naming the field and the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechanisms.config_file import check_keys, is_number, read_yaml_mapping
from mechanisms.dataset_file import SOURCE_NAMES
from mechanisms.errors import InputError, did_you_mean
from mechanisms.reactor import LABEL_TOLERANCES
from mechanisms.state import ONE_ATM_PA, PRESSURE_RANGE_PA

# The sources of rows are the dataset file's SOURCE_NAMES; these split them into the two stages.
MANIFOLD_SOURCES = ("autoignition", "free_flame", "counterflow", "solver_states")
# drawn from manifold rows
SCATTER_SOURCES = ("multiscale", "perturbed", "emcs", "equilibrium", "rollout")
DEFAULT_ROWS = {"autoignition": 4000, "free_flame": 1000, "counterflow": 1000,
                "multiscale": 4000, "perturbed": 4000, "emcs": 2000, "equilibrium": 2000,
                "solver_states": 0}
MAX_ROLLOUT_STEPS = 1000
COMMON_DILUENTS = ("N2", "AR", "Ar", "HE", "He", "n2", "ar", "he")


@dataclass
class AutoignitionOptions:
    """0D constant-pressure autoignition over the (T0, P, φ) grid."""

    activity_weight: float = 0.5  # share of states drawn ∝ |dT/dt| (the rest uniform in log time)
    t_max_s: float = 0.1  # give up on ignition after this time (s)
    settle_k: float = 1.0  # after ignition, stop once |dT/dt|·t < settle_k (K): the state has settled


TRANSPORT_MODELS = ("mixture-averaged", "multicomponent", "unity-Lewis-number")


@dataclass
class FreeFlameOptions:
    """1D freely propagating premixed flames over (unburnt T, P, φ, transport model); needs
    transport data. ``phi`` and ``pressure_atm`` default (null) to the top-level lists."""

    temperature_k: list[float] = field(default_factory=lambda: [300.0])
    phi: list[float] | None = None
    pressure_atm: list[float] | None = None
    # Cantera transport models, one flame each: a CFD code's flame (OpenFOAM's laminar transport
    # diffuses every species alike) lies between the mixture-averaged and the unity-Lewis one.
    transport: list[str] = field(default_factory=lambda: ["mixture-averaged"])
    width_m: float = 0.03
    activity_weight: float = 0.5  # share of states drawn ∝ heat-release rate


@dataclass
class CounterflowOptions:
    """Counterflow diffusion flames (fuel stream against the oxidiser) over (fuel stream, P,
    strain rate). ``fuels`` (mole-basis compositions) defaults (null) to the top-level ``fuel``,
    ``pressure_atm`` to the top-level list.

    With ``to_extinction`` each (fuel stream, P) is one sweep: from the lowest ``strain_rate_s``
    the strain is raised by ``sweep_factor`` per flame (each solved from the last), the factor
    shrinking near extinction until it is below 1 + ``extinction_tolerance``; rows are drawn from
    every burning flame of the sweep, the last of which is within that tolerance of extinction.
    """

    strain_rate_s: list[float] = field(default_factory=lambda: [100.0, 1000.0])
    fuels: list[str] | None = None
    pressure_atm: list[float] | None = None
    to_extinction: bool = False
    sweep_factor: float = 2.0
    extinction_tolerance: float = 0.05
    fuel_temperature_k: float = 300.0
    oxidizer_temperature_k: float = 300.0
    width_m: float = 0.02
    activity_weight: float = 0.5


@dataclass
class MultiscaleOptions:
    """Multi-scale draw (Zhang et al. 2022): per-species log ranges widened by the margin."""

    margin_decades: float = 2.0


@dataclass
class PerturbedOptions:
    """Perturbation of manifold states: T' = T + ΔT·α·U(−1,1), Y' = Y^(1+α·U(−1,1))."""

    alpha: float = 0.1


@dataclass
class EmcsOptions:
    """Evolutionary Monte Carlo sampling (Xu et al. 2024)."""

    evolve_time_s: float = 1e-4  # each Monte Carlo sample is evolved for this long (s)
    points_per_trajectory: int = 10  # states kept along each evolved trajectory (log-spaced)


@dataclass
class EquilibriumOptions:
    """States on both sides of each manifold state's HP equilibrium (``sampling/equilibrium.py``)."""

    closest: float = 1e-3  # smallest |s|, as a fraction of the gap to equilibrium
    beyond_fraction: float = 0.5  # share of states beyond equilibrium (over-recombined)
    # Std of each species' own log-fraction of the way to equilibrium (0: all on one line; 1:
    # a factor e between species, as a surrogate's burnt gas strays, the elements kept).
    spread: float = 0.0


@dataclass
class RolloutOptions:
    """Trajectories of ``steps`` consecutive labelled steps from manifold states (the states a
    solver visited, with ``solver_states``): rows (s_j, s_j+1), j = 0 … steps − 1, one
    trajectory after another, each row's target the next row's input. The training's rollout
    loss (``rollout_steps``, kinetics/training/rollout.py) follows a network's own steps along
    them; every row is a labelled step like any other. ``alpha`` > 0 perturbs the start states
    as ``perturbed`` does (0: the manifold states themselves)."""

    steps: int = 8
    alpha: float = 0.0


@dataclass
class SolverStatesOptions:
    """States a flow solver visited, from states files (``mechanisms/states_file.py``; ``deepkin
    openfoam states`` writes one from a case): ``rows.solver_states`` of them, drawn uniformly
    (all when the files hold fewer), are labelled like any manifold row and seed the scattered
    sources of the same run."""

    files: list[str] = field(default_factory=list)  # paths, relative to the working directory
    min_temperature_k: float | None = None  # drop colder cells (a solver's frozen fresh gas)
    # Draw evenly over temperature bands this wide (K), as far as each band has states (null:
    # uniformly over the states: a flame's thin reaction zone then gets few rows).
    band_k: float | None = None


@dataclass
class FilterOptions:
    """Drop drawn states whose rates exceed ``rate_factor`` × the manifold's largest (null: off)."""

    rate_factor: float | None = 10.0


@dataclass
class SamplingConfig:
    """Everything that determines a dataset; two runs with equal configs give identical arrays."""

    mechanism: str = "h2o2.yaml"
    phase: str | None = None
    fuel: str = "H2:1"
    oxidizer: str = "O2:1,N2:3.76"
    phi: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    temperature_k: list[float] = field(default_factory=lambda: [1000.0, 1200.0, 1400.0])
    pressure_atm: list[float] = field(default_factory=lambda: [1.0, 5.0, 20.0])
    dt: float = 1e-6
    seed: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_ROWS))
    diluents: list[str] | None = None  # default: N2/AR/HE found in the oxidiser
    rtol: float = LABEL_TOLERANCES.rtol
    atol: float = LABEL_TOLERANCES.atol
    task_rows: int = 250
    autoignition: AutoignitionOptions = field(default_factory=AutoignitionOptions)
    free_flame: FreeFlameOptions = field(default_factory=FreeFlameOptions)
    counterflow: CounterflowOptions = field(default_factory=CounterflowOptions)
    multiscale: MultiscaleOptions = field(default_factory=MultiscaleOptions)
    perturbed: PerturbedOptions = field(default_factory=PerturbedOptions)
    emcs: EmcsOptions = field(default_factory=EmcsOptions)
    equilibrium: EquilibriumOptions = field(default_factory=EquilibriumOptions)
    solver_states: SolverStatesOptions = field(default_factory=SolverStatesOptions)
    filter: FilterOptions = field(default_factory=FilterOptions)
    rollout: RolloutOptions = field(default_factory=RolloutOptions)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data. ``rollout`` (added after datasets were made without it) is
        left out while it has no rows and its default options, so that such a dataset's runs and
        journals still match their config (resume, ``--append``)."""
        data = dataclasses.asdict(self)
        if not self.rows.get("rollout", 0) and self.rollout == RolloutOptions():
            del data["rollout"]
        return data

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingConfig:
        cfg = _build(cls, data, "")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> SamplingConfig:
        return cls.from_dict(read_yaml_mapping(path, "config"))

    def with_overrides(self, overrides: dict[str, Any]) -> SamplingConfig:
        """A copy with top-level keys replaced (``rows`` entries are merged), validated."""
        data = self.to_dict()
        for key, value in overrides.items():
            if key == "rows":
                data["rows"] = {**data["rows"], **value}
            else:
                data[key] = value
        return SamplingConfig.from_dict(data)

    def validate(self) -> None:
        """Checks that need no mechanism (the pipeline checks species and thermo ranges)."""
        _positive_list("phi", self.phi)
        _positive_list("temperature_k", self.temperature_k)
        _positive_list("pressure_atm", self.pressure_atm)
        _pressures_in_range("pressure_atm", self.pressure_atm)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed: must be a whole number >= 0, got {self.seed!r}")
        _positive("dt", self.dt)
        _positive("rtol", self.rtol)
        _positive("atol", self.atol)
        if self.task_rows < 1:
            raise InputError(f"task_rows: must be >= 1, got {self.task_rows}")
        for name, count in self.rows.items():
            _check_source(name)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise InputError(f"rows.{name}: must be a whole number >= 0, got {count!r}")
        if sum(self.rows.values()) == 0:
            raise InputError("rows: every source has 0 rows; nothing to sample")
        if not 0.0 <= self.autoignition.activity_weight <= 1.0:
            raise InputError("autoignition.activity_weight: must lie in [0, 1]")
        _positive("autoignition.t_max_s", self.autoignition.t_max_s)
        _positive("autoignition.settle_k", self.autoignition.settle_k)
        _positive_list("free_flame.temperature_k", self.free_flame.temperature_k)
        _positive("free_flame.width_m", self.free_flame.width_m)
        for where, values in (("free_flame.phi", self.free_flame.phi),
                              ("free_flame.pressure_atm", self.free_flame.pressure_atm),
                              ("counterflow.pressure_atm", self.counterflow.pressure_atm)):
            if values is not None:
                _positive_list(where, values)
                if where.endswith("pressure_atm"):
                    _pressures_in_range(where, values)
        if not self.free_flame.transport:
            raise InputError("free_flame.transport: needs at least one transport model")
        for model in self.free_flame.transport:
            if model not in TRANSPORT_MODELS:
                raise InputError(f"free_flame.transport: unknown transport model '{model}'"
                                 f"{did_you_mean(model, TRANSPORT_MODELS)} (known: "
                                 f"{', '.join(TRANSPORT_MODELS)})")
        _positive_list("counterflow.strain_rate_s", self.counterflow.strain_rate_s)
        _positive("counterflow.width_m", self.counterflow.width_m)
        if self.counterflow.fuels is not None and not self.counterflow.fuels:
            raise InputError("counterflow.fuels: needs at least one fuel stream (or null)")
        if not (is_number(self.counterflow.sweep_factor) and self.counterflow.sweep_factor > 1):
            raise InputError(f"counterflow.sweep_factor: must be a number > 1, got "
                             f"{self.counterflow.sweep_factor!r}")
        if not (is_number(self.counterflow.extinction_tolerance)
                and 0 < self.counterflow.extinction_tolerance < 1):
            raise InputError(f"counterflow.extinction_tolerance: must lie in (0, 1), got "
                             f"{self.counterflow.extinction_tolerance!r}")
        if self.multiscale.margin_decades < 0:
            raise InputError("multiscale.margin_decades: must be >= 0")
        if not 0.0 < self.perturbed.alpha <= 1.0:
            raise InputError(f"perturbed.alpha: must lie in (0, 1], got {self.perturbed.alpha}")
        _positive("emcs.evolve_time_s", self.emcs.evolve_time_s)
        if self.emcs.points_per_trajectory < 1:
            raise InputError("emcs.points_per_trajectory: must be >= 1")
        if not 0.0 < self.equilibrium.closest < 1.0:
            raise InputError(f"equilibrium.closest: must lie in (0, 1), got "
                             f"{self.equilibrium.closest!r}")
        if not 0.0 <= self.equilibrium.beyond_fraction <= 1.0:
            raise InputError("equilibrium.beyond_fraction: must lie in [0, 1]")
        if not 0.0 <= self.equilibrium.spread <= 3.0:
            raise InputError(f"equilibrium.spread: must lie in [0, 3] (a log-factor's standard "
                             f"deviation), got {self.equilibrium.spread!r}")
        if self.filter.rate_factor is not None:
            _positive("filter.rate_factor", self.filter.rate_factor)
        steps = self.rollout.steps
        if not 1 <= steps <= MAX_ROLLOUT_STEPS:
            raise InputError(f"rollout.steps: must be a whole number in 1..{MAX_ROLLOUT_STEPS}, "
                             f"got {steps!r}")
        if not 0.0 <= self.rollout.alpha <= 1.0:
            raise InputError(f"rollout.alpha: must lie in [0, 1] (0: the manifold states "
                             f"themselves), got {self.rollout.alpha!r}")
        for i, name in enumerate(self.solver_states.files):
            if not isinstance(name, str) or not name:
                raise InputError(f"solver_states.files[{i}]: must be a file path, got {name!r}")
        for name in ("min_temperature_k", "band_k"):
            if getattr(self.solver_states, name) is not None:
                _positive(f"solver_states.{name}", getattr(self.solver_states, name))

    @property
    def scatter_only(self) -> bool:
        """True when only scattered sources have rows: they start from the manifold rows of an
        existing dataset (``--append``), as this run makes none of its own."""
        return any(self.rows.get(s, 0) > 0 for s in SCATTER_SOURCES) and not any(
            self.rows.get(s, 0) > 0 for s in MANIFOLD_SOURCES)

    def pressures_pa(self) -> list[float]:
        return [p * ONE_ATM_PA for p in self.pressure_atm]

    @property
    def free_flame_phis(self) -> list[float]:
        """φ of the free flames: ``free_flame.phi``, or the top-level list."""
        return self.free_flame.phi if self.free_flame.phi is not None else self.phi

    @property
    def free_flame_pressures_atm(self) -> list[float]:
        """Pressures (atm) of the free flames: ``free_flame.pressure_atm`` or the top-level list."""
        return self.free_flame.pressure_atm if self.free_flame.pressure_atm is not None \
            else self.pressure_atm

    @property
    def counterflow_pressures_atm(self) -> list[float]:
        """Pressures (atm) of the counterflow flames (``counterflow.pressure_atm`` or the
        top-level list)."""
        return self.counterflow.pressure_atm if self.counterflow.pressure_atm is not None \
            else self.pressure_atm

    @property
    def counterflow_fuels(self) -> list[str]:
        """Fuel streams of the counterflow flames (``counterflow.fuels`` or ``[fuel]``)."""
        return self.counterflow.fuels if self.counterflow.fuels is not None else [self.fuel]


def _check_source(name: str) -> None:
    if name not in SOURCE_NAMES:
        raise InputError(f"rows: unknown source '{name}'{did_you_mean(name, SOURCE_NAMES)} "
                         f"(sources: {', '.join(SOURCE_NAMES)})")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InputError(f"{name}: must be a number > 0, got {value!r}")


def _pressures_in_range(name: str, values: list[float]) -> None:
    lo, hi = (p / ONE_ATM_PA for p in PRESSURE_RANGE_PA)
    for p in values:
        if not lo <= p <= hi:
            raise InputError(f"{name}: {p:g} atm lies outside the range of states deepkin "
                             f"samples and steps, {lo:.3g}–{hi:.4g} atm")


def _positive_list(name: str, values: list[float]) -> None:
    if not values:
        raise InputError(f"{name}: needs at least one value")
    for v in values:
        _positive(name, v)


def parse_values(text: str | float | int | list, name: str) -> list[float]:
    """Parse ``"0.5,1,2"``, ``"0.5:2:4"`` (start:stop:count, inclusive), a number or a list."""
    if isinstance(text, bool):
        raise InputError(f"{name}: expected numbers, got {text!r}")
    if isinstance(text, (int, float)):
        return [float(text)]
    if isinstance(text, list):
        return [parse_values(v, name)[0] for v in text]
    if not isinstance(text, str):
        raise InputError(f"{name}: expected numbers, got {text!r}")
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if count < 1:
                raise ValueError
            if count == 1:
                return [start]
            return [start + (stop - start) * i / (count - 1) for i in range(count)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name}: cannot read '{text}'; write '1000,1200' or 'start:stop:count'")


def parse_rows(items: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Parse ``["autoignition=2000", "multiscale=5000"]`` into a dict."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise InputError(f"rows: write SOURCE=N, got '{item}'")
        _check_source(name)
        try:
            out[name] = int(value)
        except ValueError:
            raise InputError(f"rows.{name}: must be a whole number, got '{value}'")
    return out


_LIST_FIELDS = {"phi", "temperature_k", "pressure_atm", "strain_rate_s"}
_STRING_LIST_FIELDS = {"diluents", "fuels", "transport", "files"}
_OPTIONAL_NUMBER_FIELDS = {"min_temperature_k", "band_k"}  # a number, or null for off


def _build(cls, data: dict[str, Any], prefix: str):
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise InputError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(data, fields, prefix, list_known=True)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        default = fields[key].default_factory() if fields[key].default_factory is not \
            dataclasses.MISSING else fields[key].default
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value or {}, f"{where}.")
        elif key in _LIST_FIELDS:
            kwargs[key] = None if value is None and default is None else parse_values(value, where)
        elif key == "rows":
            if not isinstance(value, dict):
                raise InputError(f"rows: expected a mapping SOURCE: N, got {value!r}")
            kwargs[key] = {**DEFAULT_ROWS, **value}
        elif key in _STRING_LIST_FIELDS:
            if isinstance(value, str) and key == "transport":
                value = [value]
            if (value is not None or default is not None) and not (
                    isinstance(value, list) and all(isinstance(v, str) for v in value)):
                what = {"diluents": "species names", "fuels": "compositions ('H2:1,N2:1')",
                        "transport": "transport model names", "files": "file paths"}[key]
                raise InputError(f"{where}: expected a list of {what}, got {value!r}")
            kwargs[key] = value
        elif key in _OPTIONAL_NUMBER_FIELDS:
            if value is not None and not is_number(value):
                raise InputError(f"{where}: expected a number or null, got {value!r}")
            kwargs[key] = None if value is None else float(value)
        else:
            kwargs[key] = _coerce(value, default, where)
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if value is None:
        return None  # an optional setting switched off (e.g. filter.rate_factor: null)
    if default is None:
        if isinstance(value, str):
            return value
        raise InputError(f"{where}: expected a string, got {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise InputError(f"{where}: expected true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InputError(f"{where}: expected a whole number, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise InputError(f"{where}: expected a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise InputError(f"{where}: expected a string, got {value!r}")
    return value
