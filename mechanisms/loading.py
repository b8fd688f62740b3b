"""Loading mechanisms by Cantera's shipped name or by path, and the per-process Solution cache.

A :class:`Mechanism` holds the YAML text, its sha256 and the phase name: that is what travels to
worker processes, which rebuild (once per process) a ``ct.Solution`` with
:func:`solution_from_yaml`. Cantera objects never travel between processes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import cantera as ct
import yaml

from mechanisms.errors import InputError, cantera_message, did_you_mean

_SOLUTIONS: dict[tuple[str, str], ct.Solution] = {}


def mechanism_sha256(yaml_text: str) -> str:
    """sha256 (hex) of the mechanism text with line endings normalised to ``\\n``."""
    normalised = yaml_text.replace("\r\n", "\n").replace("\r", "\n")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Mechanism:
    """A gas-phase mechanism as plain data: YAML text, its sha256 and the phase name.

    ``source`` is what the user gave (a shipped name such as ``"gri30.yaml"`` or a path).
    """

    source: str
    yaml_text: str = field(repr=False)
    sha256: str
    phase: str

    def solution(self) -> ct.Solution:
        """This process's cached ``ct.Solution`` of the mechanism (shared: do not keep its state)."""
        return solution_from_yaml(self.yaml_text, self.phase, self.sha256)

    @property
    def species_names(self) -> list[str]:
        return list(self.solution().species_names)

    @property
    def element_names(self) -> list[str]:
        return list(self.solution().element_names)

    @property
    def n_species(self) -> int:
        return self.solution().n_species

    @property
    def inert_species(self) -> list[str]:
        """Species that take part in no reaction (third-body roles aside), e.g. N2 and AR in h2o2."""
        return inert_species(self.solution())

    def species_index(self, name: str, field_name: str = "species") -> int:
        """Index of species ``name``; :class:`InputError` naming ``field_name`` when unknown."""
        names = self.species_names
        if name not in names:
            raise InputError(f"{field_name}: unknown species '{name}' in {self.source}"
                             f"{did_you_mean(name, names, case_hint=True)}")
        return names.index(name)

    def element_index(self, name: str, field_name: str = "element") -> int:
        """Index of element ``name``; :class:`InputError` naming ``field_name`` when unknown."""
        names = self.element_names
        if name not in names:
            raise InputError(f"{field_name}: unknown element '{name}' in {self.source} "
                             f"(it has {', '.join(names)})")
        return names.index(name)


def inert_species(gas: ct.Solution) -> list[str]:
    """Species of ``gas`` that are neither reactant nor product of any reaction."""
    involved = (gas.reactant_stoich_coeffs != 0).any(axis=1) | (gas.product_stoich_coeffs != 0).any(axis=1)
    return [name for name, used in zip(gas.species_names, involved) if not used]


def has_transport(gas: ct.Solution) -> bool:
    """Whether ``gas`` carries transport data (1D flames, flame speeds and OpenFOAM's Sutherland
    fits need it)."""
    return gas.transport_model not in ("none", "None", "", None)


def shipped_mechanisms() -> list[str]:
    """Names of the YAML files in Cantera's data directories."""
    names: set[str] = set()
    for directory in ct.get_data_directories():
        if os.path.isdir(directory) and directory != ".":
            names.update(f for f in os.listdir(directory) if f.endswith(".yaml"))
    return sorted(names)


def _find_mechanism_file(source: str) -> Path:
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(f"mechanism: '{source}' is a directory, not a YAML file")
    if os.sep not in source:
        for directory in ct.get_data_directories():
            candidate = Path(directory) / source
            if candidate.is_file():
                return candidate
    shipped = ", ".join(n for n in shipped_mechanisms() if n in
                        ("h2o2.yaml", "gri30.yaml", "nDodecane_Reitz.yaml"))
    raise InputError(f"mechanism: '{source}' not found (not a file, and not a mechanism shipped "
                     f"with Cantera such as {shipped})")


def _phase_names(yaml_text: str) -> list[str]:
    try:
        doc = yaml.safe_load(yaml_text)
    except yaml.YAMLError:
        return []
    phases = doc.get("phases", []) if isinstance(doc, dict) else []
    return [p.get("name") for p in phases if isinstance(p, dict) and p.get("name")]


def load_mechanism(source: str, phase: str | None = None) -> Mechanism:
    """Load a gas mechanism by Cantera's shipped name (``"h2o2.yaml"``) or by path.

    ``phase`` picks a phase by name (``nDodecane_Reitz.yaml`` needs ``"nDodecane_IG"``); by default
    the file's first phase. Raises :class:`InputError` with one readable line when the file is
    missing or unreadable, the phase is unknown, or the phase is not an ideal gas with kinetics.
    """
    path = _find_mechanism_file(str(source))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"mechanism: cannot read '{source}': {exc}")
    phases = _phase_names(text)
    if not phases:
        raise InputError(f"mechanism: '{source}' is not a Cantera YAML mechanism (no 'phases' list)")
    if phase is None:
        phase = phases[0]
    elif phase not in phases:
        raise InputError(f"phase: '{phase}' is not a phase of {source} "
                         f"(it has: {', '.join(phases)})")
    gas = _build_solution(text, phase, source, path)
    if gas.thermo_model != "ideal-gas":
        ideal = [p for p in phases if _is_ideal_gas(text, p)]
        hint = f"; pick one of: {', '.join(ideal)}" if ideal else ""
        raise InputError(f"phase: '{phase}' of {source} is not an ideal gas "
                         f"(thermo model '{gas.thermo_model}'){hint}")
    if gas.n_reactions == 0:
        raise InputError(f"mechanism: phase '{phase}' of {source} has no reactions")
    mech = Mechanism(source=str(source), yaml_text=text, sha256=mechanism_sha256(text), phase=phase)
    _SOLUTIONS[(mech.sha256, phase)] = gas
    return mech


def _is_ideal_gas(text: str, phase: str) -> bool:
    doc = yaml.safe_load(text)
    for p in doc.get("phases", []):
        if p.get("name") == phase:
            return p.get("thermo") == "ideal-gas"
    return False


def _build_solution(text: str, phase: str, source: str, path: Path) -> ct.Solution:
    try:
        return ct.Solution(yaml=text, name=phase)
    except ct.CanteraError:
        pass
    # Files that refer to others by relative path only load from their own location.
    try:
        return ct.Solution(str(path), name=phase)
    except ct.CanteraError as exc:
        raise InputError(f"mechanism: Cantera cannot load phase '{phase}' of {source}: "
                         f"{cantera_message(exc)}")


def solution_from_yaml(yaml_text: str, phase: str, sha256: str | None = None) -> ct.Solution:
    """This process's cached ``ct.Solution`` for ``(sha256, phase)``, built from YAML text once.

    The cached object is shared by every caller in the process: set its state before each use.
    """
    key = (sha256 or mechanism_sha256(yaml_text), phase)
    gas = _SOLUTIONS.get(key)
    if gas is None:
        gas = ct.Solution(yaml=yaml_text, name=phase)
        _SOLUTIONS[key] = gas
    return gas
