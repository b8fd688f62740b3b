"""The cell states of a finished OpenFOAM run, for the ``solver_states`` sampling source.

``deepkin openfoam states CASE -o FILE`` reads T, p and every species' mass fraction of each
cell at each written time and writes them as a states file (``mechanisms/states_file.py``). Run a
surrogate's case, harvest its states, label them (``deepkin sample --rows solver_states=N
--solver-states FILE --append``) and retrain: the states the surrogate drifts into in the
solver are then in its dataset (``docs/training.md``, "Sampling the solver's own states").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from couplers.openfoam.foam import entry, read_internal_field, strip_comments, time_directories
from mechanisms.errors import InputError
from mechanisms.state import state_width


def case_species(case: Path) -> list[str]:
    """The species of a case, from the ``species`` list of its chemistry file (the
    ``foamChemistryFile`` of ``constant/thermophysicalProperties``, default
    ``constant/reactions``)."""
    case = Path(case)
    chemistry = case / "constant" / "reactions"
    props = case / "constant" / "thermophysicalProperties"
    if props.is_file():
        named = entry(props.read_text(errors="replace"), "foamChemistryFile")
        if named:
            name = named.strip('"')
            if name.startswith("<constant>"):  # already rooted in the case: join it once
                chemistry = case / "constant" / name[len("<constant>"):].lstrip("/")
            else:
                chemistry = Path(name) if Path(name).is_absolute() else case / name
    if not chemistry.is_file():
        raise InputError(f"case: {case} has no chemistry file {chemistry} to name its species")
    match = re.search(r"\bspecies\s+(\d+)?\s*\((.*?)\)\s*;", strip_comments(chemistry.read_text(
        errors="replace")), flags=re.S)
    if not match:
        raise InputError(f"case: {chemistry} has no species list")
    species = match.group(2).split()
    if match.group(1) and int(match.group(1)) != len(species):
        raise InputError(f"case: {chemistry} says {match.group(1)} species, lists {len(species)}")
    return species


def _roots(case: Path) -> list[tuple[str, Path]]:
    """``(label, folder)`` holding time directories: the case, or its ``processorN`` folders
    when it was run decomposed and not reconstructed (the case itself holds one time only)."""
    processors = sorted((p for p in case.glob("processor*") if p.is_dir()
                         and p.name[len("processor"):].isdigit()),
                        key=lambda p: int(p.name[len("processor"):]))
    if processors and len(time_directories(case)) <= 1:
        return [(p.name, p) for p in processors]
    return [("", case)]


def _one_time(folder: Path, species: list[str]) -> np.ndarray:
    """The states ``[cells, 2 + ns]`` of one time directory."""
    def field(name: str) -> np.ndarray:
        path = folder / name
        if not path.is_file():
            raise InputError(f"case: {folder} lacks the field {name}")
        return read_internal_field(path)

    t, p = field("T"), field("p")
    columns = [field(s) for s in species]
    n = max(len(t), len(p), *(len(c) for c in columns))
    states = np.empty((n, state_width(len(species))))
    states[:, 0], states[:, 1] = np.broadcast_to(t, n), np.broadcast_to(p, n)
    for k, values in enumerate(columns):
        states[:, 2 + k] = np.broadcast_to(values, n)  # a uniform field is one value
    return states


def case_states(case: str | Path, from_time_s: float | None = None
                ) -> tuple[np.ndarray, list[str], str]:
    """Every cell's state at every written time after ``from_time_s`` (default: every time but
    the first, which holds the initial conditions, not the solver's): ``(states [n, 2 + ns],
    species, origin)``. InputError when the case has no such time or lacks a field."""
    case = Path(case)
    if not case.is_dir():
        raise InputError(f"case: {case} is not a folder")
    species = case_species(case)
    parts, times = [], []
    for label, root in _roots(case):
        written = time_directories(root)
        start = written[0][0] if from_time_s is None and written else from_time_s
        chosen = [(t, d) for t, d in written if t > start] if written else []
        if not chosen:
            where = f"{case}/{label}" if label else str(case)
            raise InputError(f"case: {where} has no time directory after "
                             f"{start if start is not None else 'its first'} s")
        parts.extend(_one_time(d, species) for _, d in chosen)
        times.extend(t for t, _ in chosen)
    states = np.concatenate(parts)
    origin = (f"OpenFOAM case {case.resolve()}: {len(set(times))} times {min(times):g}–"
              f"{max(times):g} s, {len(states)} cell states")
    return states, species, origin
