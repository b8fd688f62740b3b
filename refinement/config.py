"""The refinement loop's configuration (``deepkin refine MODEL -c refine.yaml``): dataclasses
read from YAML, every bad key or value refused with one :class:`InputError` line naming it.

Paths in the file (recipes, training configs) are relative to the file's own folder. The
sampling recipes and training configs it names are read and checked here too, so that a typo in
one of them stops the command before any work. Units are SI except where a key names its unit.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechanisms.cache import cache_root
from mechanisms.config_file import check_keys, is_number, read_yaml_mapping
from mechanisms.errors import InputError
from mechanisms.state import ONE_ATM_PA, PRESSURE_RANGE_PA

FLAME_KINDS = ("flame1d", "counterflow")
NETWORKS = ("main", "tail", "induction")
AFTER_IGNITION_S = 0.01  # ZeroDSet.after_ignition_s's default (s)
AFTER_IGNITION_MAX_S = 1.0  # the longest after_ignition_s accepted (s)
# evaluate.chemistry: the round's flames through ``deepkin serve`` (the default) or the model
# exported into each case and stepped in the solver's own process
EVALUATE_CHEMISTRIES = ("deepkin", "deepkin-inprocess")


@dataclass(frozen=True)
class FlameCase:
    """An OpenFOAM case of ``deepkin openfoam case`` (``kind`` flame1d or counterflow), run for
    ``end_time_s`` s; ``from_time_s``: the harvest takes the states written after this time (s;
    null: every time but the first)."""

    kind: str
    end_time_s: float
    phi: float = 1.0
    pressure_atm: float = 1.0
    temperature_k: float = 300.0
    fuel: str | None = None  # default: the model's dataset's (counterflow: the fuel stream)
    oxidizer: str | None = None
    cells: int | None = None  # default 400 (flame1d), 100 between the inlets (counterflow)
    cells_y: int = 40  # counterflow: cells across
    steps_per_call: int = 1  # deltaT = this many model steps
    velocity_m_s: float = 1.0  # counterflow: speed of each inlet jet
    from_time_s: float | None = None

    @property
    def label(self) -> str:
        """A name for the case's folders and tables, e.g. ``flame1d-phi0.85-1atm-300K``."""
        fuel = f"-{self.fuel.replace(':', '').replace(',', '_')}" if self.fuel else ""
        mix = f"phi{self.phi:g}" if self.kind == "flame1d" else f"v{self.velocity_m_s:g}"
        return f"{self.kind}-{mix}-{self.pressure_atm:g}atm-{self.temperature_k:g}K{fuel}"

    @property
    def cell_count(self) -> int:
        return self.cells or (400 if self.kind == "flame1d" else 100)

    def same_conditions(self, other: FlameCase) -> bool:
        """Whether two cases burn the same mixture at the same state (a harvest case that is
        also a validation case)."""
        keys = ("kind", "phi", "pressure_atm", "temperature_k", "fuel", "oxidizer", "velocity_m_s")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass(frozen=True)
class ZeroDSet:
    """0D constant-pressure rollouts over a grid (``deepkin validate``'s): T0 (K) × P (atm) ×
    φ, at least ``steps`` model steps (the rollout covers twice the slowest ignition Cantera
    finds within ``ignition_search_s`` s).

    ``after_ignition_species`` are read ``after_ignition_s`` s after each side's own ignition
    and compared with Cantera's (``deepkin validate``'s after-ignition figure; the rollout is
    made long enough); None: CO and NO where the mechanism has them; empty: none."""

    temperature_k: tuple[float, ...]
    pressure_atm: tuple[float, ...]
    phi: tuple[float, ...]
    steps: int = 10000
    ignition_search_s: float = 0.2
    after_ignition_s: float = AFTER_IGNITION_S
    after_ignition_species: tuple[str, ...] | None = None

    def conditions(self) -> list[tuple[float, float, float]]:
        """``(T0 K, P atm, φ)`` of every grid point."""
        return [(t, p, f) for t in self.temperature_k for p in self.pressure_atm for f in self.phi]


@dataclass(frozen=True)
class CaseSet:
    """The cases run with each round's model: OpenFOAM flames and a 0D grid."""

    flames: tuple[FlameCase, ...] = ()
    zero_d: ZeroDSet | None = None

    @property
    def empty(self) -> bool:
        return not self.flames and self.zero_d is None


@dataclass(frozen=True)
class Targets:
    """What the validation cases must meet for the loop to stop early: flame speed within
    ``flame_speed_rel`` of the ODE run's, peak temperature within ``peak_temperature_k`` K, the
    0D rollouts' end temperature within ``equilibrium_temperature_k`` K of Cantera's, every
    ignition delay within ``ignition_delay_max_rel`` of Cantera's and their mean error over a
    grid within ``ignition_delay_mean_rel``, and every tracked species' mass fraction
    (``ZeroDSet.after_ignition_species``) a set time after ignition within
    ``after_ignition_rel`` of Cantera's."""

    flame_speed_rel: float = 0.03
    peak_temperature_k: float = 10.0
    equilibrium_temperature_k: float = 10.0
    ignition_delay_max_rel: float = 0.10
    ignition_delay_mean_rel: float = 0.03
    after_ignition_rel: float = 0.10


@dataclass(frozen=True)
class TrainSettings:
    """The three training configs (``deepkin train`` YAML) a round fine-tunes with, and what
    every one of them gets on top (``overrides``: e.g. fewer epochs, a lower learning rate)."""

    main: Path
    tail: Path | None = None
    induction: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    threads: int | None = None
    network_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per network

    def settings_for(self, network: str) -> dict[str, Any]:
        """What ``network``'s config gets on top: ``overrides``, then its own overrides."""
        return {**self.overrides, **self.network_overrides.get(network, {})}

    def paths(self) -> dict[str, Path]:
        """``{network: config path}`` of the networks trained, in training order."""
        return {n: p for n, p in (("main", self.main), ("tail", self.tail),
                                  ("induction", self.induction)) if p is not None}


@dataclass(frozen=True)
class RefineConfig:
    """The whole loop: see ``docs/training.md``, "The refinement loop (``deepkin refine``)"."""

    name: str
    source: Path  # the YAML file read
    replay_recipes: tuple[Path, ...]
    replay_dataset: Path | None
    harvest_recipe: Path
    harvest: CaseSet
    validation: CaseSet
    train: TrainSettings
    rounds: int = 3
    retrain: bool = False
    targets: Targets = field(default_factory=Targets)
    harvest_workers: int | None = None
    serve_threads: int | None = None
    heat_release_band_k: float = 300.0
    reference_workers: int | None = None  # ODE reference flames run at once (None: one a core)
    reference_folder: Path | None = None  # where the ODE references are cached (None: DIR/references)
    zero_d_workers: int | None = None  # 0D rollout parts run at once (None: one a core)
    evaluate_chemistry: str = "deepkin"  # the round's flames: the service or in-process
    # the 0D rollouts' step: TorchScript or AOTInductor (a speed setting: not in the recipe)
    zero_d_small_calls: str = "torchscript"
    # harvest the harvest flames' ODE reference runs too (the states the true flame visits)
    harvest_reference_states: bool = False

    @property
    def in_process(self) -> bool:
        """Whether the round's flames step the model in the solver's process (no server)."""
        return self.evaluate_chemistry == "deepkin-inprocess"

    def recipe(self) -> dict[str, Any]:
        """What the rounds compute from (paths, settings and every named file's text), as the
        work folder commits it; ``rounds`` and ``targets`` are left out: they only decide when
        the loop stops. ``evaluate_chemistry`` and ``harvest_reference_states`` are there only
        when they are not the defaults (``deepkin``, false), so that a work folder committed
        before the key existed still resumes (``first_difference`` only forgives a missing key
        whose value is empty)."""
        def text(path: Path | None) -> str | None:
            return None if path is None else path.read_text(encoding="utf-8")

        train = _plain(self.train)
        for network, path in self.train.paths().items():
            train[network] = {"file": path.name, "text": text(path)}
        recipe = {
            "name": self.name,
            "retrain": self.retrain,
            "replay_recipes": [{"file": p.name, "text": text(p)} for p in self.replay_recipes],
            "replay_dataset": str(self.replay_dataset) if self.replay_dataset else None,
            "harvest_recipe": {"file": self.harvest_recipe.name,
                               "text": text(self.harvest_recipe)},
            "harvest": _case_set_recipe(self.harvest),
            "validation": _case_set_recipe(self.validation),
            "train": train,
            "harvest_workers": self.harvest_workers,
            "serve_threads": self.serve_threads,
            "heat_release_band_k": self.heat_release_band_k,
        }
        if self.evaluate_chemistry != "deepkin":
            recipe["evaluate_chemistry"] = self.evaluate_chemistry
        if self.harvest_reference_states:
            recipe["harvest_reference_states"] = True
        return recipe


def _plain(value: Any) -> Any:
    """A dataclass tree as JSON-ready data (paths as text)."""
    return json.loads(json.dumps(dataclasses.asdict(value), default=str))


def _case_set_recipe(cases: CaseSet) -> dict[str, Any]:
    """A case set as the recipe holds it: ``zero_d.after_ignition_s`` left out at its default,
    so that a work folder committed before the key existed (which lacks it) still resumes
    (``first_difference`` only forgives a missing key whose value is empty)."""
    plain = _plain(cases)
    zero_d = plain.get("zero_d")
    if zero_d is not None and zero_d.get("after_ignition_s") == AFTER_IGNITION_S:
        del zero_d["after_ignition_s"]
    return plain


# -- reading ----------------------------------------------------------------------------------
_TOP = ("name", "rounds", "retrain", "replay", "harvest", "validation", "train", "targets",
        "report", "serve", "references", "evaluate")


def load_refine_config(path: str | Path) -> RefineConfig:
    """The configuration in the YAML file ``path``; InputError naming the first bad key."""
    path = Path(path)
    data = read_yaml_mapping(path, "config")
    check_keys(data, _TOP, what="refine setting", list_known=True)
    folder = path.resolve().parent
    name = data.get("name", path.name.split(".")[0])
    if not (isinstance(name, str) and name and "/" not in name and not name.startswith(".")):
        raise InputError(f"name: must be a plain name (a folder of the work dir), got {name!r}")
    rounds = _whole(data.get("rounds", 3), "rounds", 1)
    retrain = data.get("retrain", False)
    if not isinstance(retrain, bool):
        raise InputError(f"retrain: must be true or false, got {retrain!r}")

    replay = _mapping(data.get("replay"), "replay", required=True)
    check_keys(replay, ("recipes", "dataset"), "replay.", list_known=True)
    recipes = tuple(_file(folder, p, f"replay.recipes[{i}]")
                    for i, p in enumerate(_list(replay.get("recipes", []), "replay.recipes")))
    dataset = replay.get("dataset")
    dataset = None if dataset is None else _path(folder, dataset, "replay.dataset")
    if not recipes and dataset is None:
        raise InputError("replay: name the sampling recipes of the replay dataset (recipes) or a "
                         "dataset file (dataset)")
    for i, recipe in enumerate(recipes):
        _sampling_config(recipe, f"replay.recipes[{i}]")

    harvest = _mapping(data.get("harvest"), "harvest", required=True)
    check_keys(harvest, ("recipe", "workers", "flames", "zero_d", "reference_states"), "harvest.",
               list_known=True)
    if "recipe" not in harvest:
        raise InputError("harvest.recipe: missing; name the `deepkin sample` recipe that labels "
                         "the harvested states (rows.solver_states > 0)")
    harvest_recipe = _file(folder, harvest["recipe"], "harvest.recipe")
    sampling = _sampling_config(harvest_recipe, "harvest.recipe")
    if sampling.rows.get("solver_states", 0) < 1:
        raise InputError("harvest.recipe: rows.solver_states is 0; the harvest labels the "
                         "states the runs visited")
    workers = harvest.get("workers")
    if workers is not None:
        workers = _whole(workers, "harvest.workers", 0)
    harvest_cases = _case_set(harvest, "harvest")
    if harvest_cases.empty:
        raise InputError("harvest: needs flames or zero_d to harvest states from")
    reference_states = harvest.get("reference_states", False)
    if not isinstance(reference_states, bool):
        raise InputError("harvest.reference_states: must be true or false (harvest the harvest "
                         f"flames' ODE reference runs too), got {reference_states!r}")
    if reference_states and not harvest_cases.flames:
        raise InputError("harvest.reference_states: true needs harvest flames (their ODE "
                         "reference runs are what it harvests)")
    validation = _mapping(data.get("validation"), "validation")
    check_keys(validation, ("flames", "zero_d"), "validation.", list_known=True)
    validation_cases = _case_set(validation, "validation")
    _check_held_out(harvest_cases, validation_cases)

    train = _train_settings(_mapping(data.get("train"), "train", required=True), folder, retrain)
    targets = _targets(_mapping(data.get("targets"), "targets"))
    report = _mapping(data.get("report"), "report")
    check_keys(report, ("heat_release_band_k",), "report.", list_known=True)
    band = _number(report.get("heat_release_band_k", 300.0), "report.heat_release_band_k")
    threads = _count_setting(data, "serve", "threads")
    reference_workers, reference_folder = _references(data.get("references"), folder)
    zero_d_workers, chemistry, small_calls = _evaluate(data.get("evaluate"))
    return RefineConfig(name=name, source=path.resolve(), replay_recipes=recipes,
                        replay_dataset=dataset, harvest_recipe=harvest_recipe,
                        harvest=harvest_cases, validation=validation_cases, train=train,
                        rounds=rounds, retrain=retrain, targets=targets, harvest_workers=workers,
                        serve_threads=threads, heat_release_band_k=band,
                        reference_workers=reference_workers, reference_folder=reference_folder,
                        zero_d_workers=zero_d_workers, evaluate_chemistry=chemistry,
                        zero_d_small_calls=small_calls,
                        harvest_reference_states=reference_states)


def _evaluate(value: Any) -> tuple[int | None, str, str]:
    """``evaluate.workers`` (a whole number >= 1, None when absent), ``evaluate.chemistry``
    (one of :data:`EVALUATE_CHEMISTRIES`, default ``deepkin``) and ``evaluate.small_calls`` (one
    of :data:`SMALL_CALLS`, default ``torchscript``)."""
    mapping = _mapping(value, "evaluate")
    check_keys(mapping, ("workers", "chemistry", "small_calls"), "evaluate.", list_known=True)
    workers = mapping.get("workers")
    workers = None if workers is None else _whole(workers, "evaluate.workers", 1)
    chemistry = mapping.get("chemistry", "deepkin")
    if chemistry not in EVALUATE_CHEMISTRIES:
        raise InputError(f"evaluate.chemistry: must be one of {', '.join(EVALUATE_CHEMISTRIES)}, "
                         f"got {chemistry!r}")
    # what steps the 0D rollouts' calls (a few cells each): the TorchScript step or the
    # AOTInductor-compiled one (kinetics.step.small_step; the same states within 1e-10 K)
    from kinetics.integrator import SMALL_CALLS

    small_calls = mapping.get("small_calls", "torchscript")
    if small_calls not in SMALL_CALLS:
        raise InputError(f"evaluate.small_calls: must be one of {', '.join(SMALL_CALLS)}, "
                         f"got {small_calls!r}")
    return workers, chemistry, small_calls


def _references(value: Any, folder: Path) -> tuple[int | None, Path | None]:
    """``references.workers`` (a whole number >= 1) and ``references.folder`` (a folder, relative
    to the config's own, ``~`` expanded), each None when absent."""
    mapping = _mapping(value, "references")
    check_keys(mapping, ("workers", "folder"), "references.", list_known=True)
    workers = mapping.get("workers")
    workers = None if workers is None else _whole(workers, "references.workers", 1)
    where = mapping.get("folder")
    if where is None:
        return workers, None
    if not isinstance(where, str) or not where.strip():
        raise InputError(f"references.folder: must be a folder path, got {where!r}")
    path = Path(where).expanduser()
    path = path if path.is_absolute() else folder / path
    if path.exists() and not path.is_dir():
        raise InputError(f"references.folder: {path} is not a folder")
    return workers, path


def _count_setting(data: dict[str, Any], block: str, key: str) -> int | None:
    """``data[block][key]``: a whole number >= 1, or None when absent; the block holds that key
    only (InputError naming any other)."""
    mapping = _mapping(data.get(block), block)
    check_keys(mapping, (key,), f"{block}.", list_known=True)
    value = mapping.get(key)
    return None if value is None else _whole(value, f"{block}.{key}", 1)


def _mapping(value: Any, where: str, required: bool = False) -> dict[str, Any]:
    if value is None:
        if required:
            raise InputError(f"{where}: missing; see docs/training.md, \"The refinement loop\"")
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: must be a mapping of keys, got {value!r}")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise InputError(f"{where}: must be a list, got {value!r}")
    return value


def _whole(value: Any, where: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"{where}: must be a whole number >= {least}, got {value!r}")
    return value


def _number(value: Any, where: str, positive: bool = True) -> float:
    if not is_number(value) or (positive and value <= 0):
        raise InputError(f"{where}: must be a number > 0, got {value!r}")
    return float(value)


def _path(folder: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: must be a file path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def _file(folder: Path, value: Any, where: str) -> Path:
    path = _path(folder, value, where)
    if not path.is_file():
        raise InputError(f"{where}: file '{path}' not found (paths are relative to the config's "
                         "folder)")
    return path


def _sampling_config(path: Path, where: str):
    """The sampling recipe at ``path``, its errors prefixed with ``where``."""
    from sampling.config import SamplingConfig

    try:
        return SamplingConfig.from_yaml(path)
    except InputError as exc:
        raise InputError(f"{where}: {path.name}: {exc}") from None


def _case_set(data: dict[str, Any], where: str) -> CaseSet:
    flames = tuple(_flame_case(c, f"{where}.flames[{i}]")
                   for i, c in enumerate(_list(data.get("flames", []) or [], f"{where}.flames")))
    labels = [c.label for c in flames]
    for label in labels:
        if labels.count(label) > 1:
            raise InputError(f"{where}.flames: the case {label} is listed twice")
    zero_d = data.get("zero_d")
    return CaseSet(flames, None if zero_d is None else _zero_d(zero_d, f"{where}.zero_d"))


_FLAME_KEYS = [f.name for f in dataclasses.fields(FlameCase)]


def _flame_case(data: Any, where: str) -> FlameCase:
    data = _mapping(data, where, required=True)
    check_keys(data, _FLAME_KEYS, f"{where}.", list_known=True)
    kind = data.get("kind")
    if kind not in FLAME_KINDS:
        raise InputError(f"{where}.kind: must be one of {', '.join(FLAME_KINDS)}, got {kind!r}")
    if "end_time_s" not in data:
        raise InputError(f"{where}.end_time_s: missing; how long the run is (s)")
    values: dict[str, Any] = {"kind": kind}
    for key in ("end_time_s", "phi", "pressure_atm", "temperature_k", "velocity_m_s"):
        if key in data:
            values[key] = _number(data[key], f"{where}.{key}")
    if "from_time_s" in data and data["from_time_s"] is not None:
        values["from_time_s"] = _number(data["from_time_s"], f"{where}.from_time_s",
                                        positive=False)
        if values["from_time_s"] < 0 or values["from_time_s"] >= values["end_time_s"]:
            raise InputError(f"{where}.from_time_s: must lie in [0, end_time_s), got "
                             f"{data['from_time_s']!r}")
    for key, least in (("cells", 10), ("cells_y", 2), ("steps_per_call", 1)):
        if key in data and data[key] is not None:
            values[key] = _whole(data[key], f"{where}.{key}", least)
    for key in ("fuel", "oxidizer"):
        if data.get(key) is not None:
            if not isinstance(data[key], str) or ":" not in data[key]:
                raise InputError(f"{where}.{key}: must be a composition such as 'CH4:1', got "
                                 f"{data[key]!r}")
            values[key] = data[key]
    _pressure_in_range(values.get("pressure_atm", 1.0), f"{where}.pressure_atm")
    return FlameCase(**values)


def _zero_d(data: Any, where: str) -> ZeroDSet:
    from sampling.config import parse_values

    data = _mapping(data, where, required=True)
    keys = [f.name for f in dataclasses.fields(ZeroDSet)]
    check_keys(data, keys, f"{where}.", list_known=True)
    grid = {}
    for key in ("temperature_k", "pressure_atm", "phi"):
        if key not in data:
            raise InputError(f"{where}.{key}: missing; the grid needs T0 (K), P (atm) and phi")
        values = parse_values(data[key], f"{where}.{key}")
        if not values:
            raise InputError(f"{where}.{key}: needs at least one value")
        for v in values:
            _number(v, f"{where}.{key}")
        grid[key] = tuple(values)
    for p in grid["pressure_atm"]:
        _pressure_in_range(p, f"{where}.pressure_atm")
    steps = _whole(data.get("steps", 10000), f"{where}.steps", 1)
    search = _number(data.get("ignition_search_s", 0.2), f"{where}.ignition_search_s")
    if search > 10:
        raise InputError(f"{where}.ignition_search_s: must be in (0, 10] s, got {search:g}")
    delay = _number(data.get("after_ignition_s", AFTER_IGNITION_S), f"{where}.after_ignition_s")
    if delay > AFTER_IGNITION_MAX_S:
        raise InputError(f"{where}.after_ignition_s: must be in (0, {AFTER_IGNITION_MAX_S:g}] s, "
                         f"got {delay:g}")
    species = _species_list(data.get("after_ignition_species"),
                            f"{where}.after_ignition_species")
    return ZeroDSet(grid["temperature_k"], grid["pressure_atm"], grid["phi"], steps, search,
                    delay, species)


def _species_list(value: Any, where: str) -> tuple[str, ...] | None:
    """A list of distinct species names (None when absent: the default species)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(f"{where}: must be a list of species names such as [CO, NO] ([] for "
                         f"none), got {value!r}")
    for name in value:
        if value.count(name) > 1:
            raise InputError(f"{where}: the species {name} is listed twice")
    return tuple(value)


def _pressure_in_range(p_atm: float, where: str) -> None:
    lo, hi = PRESSURE_RANGE_PA
    if not lo <= p_atm * ONE_ATM_PA <= hi:
        raise InputError(f"{where}: {p_atm:g} atm lies outside {lo / ONE_ATM_PA:g}–"
                         f"{hi / ONE_ATM_PA:g} atm")


def _check_held_out(harvest: CaseSet, validation: CaseSet) -> None:
    """InputError when a harvest case is also a validation case: its states would be learnt,
    and the validation would no longer be held out."""
    for i, case in enumerate(harvest.flames):
        for other in validation.flames:
            if case.same_conditions(other):
                raise InputError(f"harvest.flames[{i}]: {case.label} is also a validation case; "
                                 "harvesting it would train on the validation set")
    if harvest.zero_d and validation.zero_d:
        held_out = set(validation.zero_d.conditions())
        for t, p, f in harvest.zero_d.conditions():
            if (t, p, f) in held_out:
                raise InputError(f"harvest.zero_d: the condition T0 {t:g} K, {p:g} atm, phi {f:g} "
                                 "is also a validation condition; harvesting it would train on "
                                 "the validation set")


def _train_settings(data: dict[str, Any], folder: Path, retrain: bool) -> TrainSettings:
    from kinetics.training.train import TrainConfig

    check_keys(data, ("main", "tail", "induction", "overrides", "network_overrides", "device",
                      "threads"), "train.", list_known=True)
    if "main" not in data:
        raise InputError("train.main: missing; name the main network's training config")
    paths = {n: None if data.get(n) is None else _file(folder, data[n], f"train.{n}")
             for n in NETWORKS}
    if paths["induction"] is not None and paths["tail"] is None:
        raise InputError("train.induction: the induction network follows the near-equilibrium "
                         "one; name train.tail too")
    overrides = _mapping(data.get("overrides"), "train.overrides")
    per_network = _mapping(data.get("network_overrides"), "train.network_overrides")
    check_keys(per_network, NETWORKS, "train.network_overrides.", what="network")
    per_network = {n: _mapping(v, f"train.network_overrides.{n}") for n, v in per_network.items()}
    for where, mapping in [("train.overrides", overrides),
                           *((f"train.network_overrides.{n}", v) for n, v in per_network.items())]:
        check_keys(mapping, [f.name for f in dataclasses.fields(TrainConfig)], f"{where}.",
                   what="training setting")
        for key in ("tail_of", "init_from", "init_scales"):
            if key in mapping:
                raise InputError(f"{where}.{key}: set by the loop (each round starts from the "
                                 "previous round's model); remove it")
    for network in per_network:
        if paths[network] is None:
            raise InputError(f"train.network_overrides.{network}: the loop trains no {network} "
                             f"network (train.{network} is not named)")
    for network, path in paths.items():
        if path is None:
            continue
        raw = {**read_yaml_mapping(path, f"train.{network}"), **overrides,
               **per_network.get(network, {})}
        try:
            TrainConfig.from_dict(raw)
        except InputError as exc:
            raise InputError(f"train.{network}: {path.name}: {exc}") from None
        if network == "main" and raw.get("tail_of"):
            raise InputError(f"train.main: {path.name} has tail_of; the main network's config "
                             "has none")
        if network != "main" and not raw.get("tail_of"):
            raise InputError(f"train.{network}: {path.name} has no tail_of; a {network} "
                             "network's config names the model it is added to")
        if network == "induction" and raw.get("regime") != "induction":
            raise InputError(f"train.induction: {path.name} does not set regime: induction")
    device = data.get("device", "auto")
    if not isinstance(device, str):
        raise InputError(f"train.device: must be cpu, cuda, cuda:N or auto, got {device!r}")
    threads = data.get("threads")
    if threads is not None:
        threads = _whole(threads, "train.threads", 1)
    return TrainSettings(paths["main"], paths["tail"], paths["induction"], dict(overrides),
                         device, threads, per_network)


def _targets(data: dict[str, Any]) -> Targets:
    keys = [f.name for f in dataclasses.fields(Targets)]
    check_keys(data, keys, "targets.", list_known=True)
    return Targets(**{k: _number(v, f"targets.{k}") for k, v in data.items()})


def default_work_dir(name: str) -> Path:
    """``$DEEPKIN_CACHE_DIR/refine/NAME`` or ``~/.cache/deepkin/refine/NAME``."""
    return cache_root() / "refine" / name

