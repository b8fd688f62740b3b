"""States a flow solver visited, as one small HDF5 file: the input of the ``solver_states`` source.

A surrogate run inside a solver drifts into states that no canonical case visits (its burnt gas
recombines in another order than Cantera's, say). Labelling those states and training on them
is the DAgger-like loop of ``docs/training.md``; this module holds the file between the two.

The file (schema ``deepkin-states/1``):

- ``states``: ``[n, 2 + ns]`` float64, one row ``[T (K), P (Pa), Y_1 … Y_ns]`` per cell;
- attribute ``species``: JSON list of the ``ns`` species names, in the columns' order;
- attribute ``origin``: free text saying where the states came from (case, times);
- attribute ``states_schema``: ``"deepkin-states/1"``.

Write one with :func:`write_states` (``deepkin openfoam states CASE -o FILE`` does it for an
OpenFOAM case); :func:`load_solver_states` reads one or more for a mechanism.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cantera as ct
import h5py
import numpy as np

from mechanisms.atomic_io import atomic_write
from mechanisms.errors import InputError
from mechanisms.state import (
    PRESSURE_RANGE_PA,
    Y_START,
    normalise_mass_fractions,
    state_width,
    temperature,
)

STATES_SCHEMA = "deepkin-states/1"
# A row whose mass fractions sum further than this from 1 (before clipping negatives) is not a
# state but damaged data: refused, not renormalised.
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class StatesFileFacts:
    """What one states file contributed to a sampling run (recorded in the dataset's run)."""

    path: str
    sha256: str
    origin: str
    rows_in_file: int
    rows_kept: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "origin": self.origin,
                "rows_in_file": self.rows_in_file, "rows_kept": self.rows_kept}


def write_states(path: str | Path, states: np.ndarray, species: list[str], origin: str = ""
                 ) -> Path:
    """Write ``states`` (``[n, 2 + len(species)]``: T in K, P in Pa, mass fractions) to ``path``
    atomically; returns the path. InputError for a shape that does not match ``species``."""
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] != state_width(len(species)):
        raise InputError(f"states: expected [n, {state_width(len(species))}] for "
                         f"{len(species)} species, got {list(states.shape)}")

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("states", data=states, compression="gzip", shuffle=True)
            h5.attrs["species"] = json.dumps(list(species))
            h5.attrs["origin"] = origin
            h5.attrs["states_schema"] = STATES_SCHEMA

    return atomic_write(path, write, suffix=".h5")


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_states(path: str | Path, field: str = "states") -> tuple[np.ndarray, list[str], str]:
    """``(states [n, 2 + ns], species, origin)`` of a states file; InputError (prefixed
    ``field:``) when it is missing or not a states file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{field}: {path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("states_schema") != STATES_SCHEMA:
                raise InputError(f"{field}: {path} is not a deepkin states file (no "
                                 f"states_schema '{STATES_SCHEMA}'; write one with "
                                 "`deepkin openfoam states` or mechanisms.states_file.write_states)")
            species = json.loads(h5.attrs["species"])
            states = h5["states"][...].astype(np.float64)
            origin = str(h5.attrs.get("origin", ""))
    except OSError as exc:
        raise InputError(f"{field}: cannot read {path} as HDF5 ({exc})") from None
    if states.ndim != 2 or states.shape[1] != state_width(len(species)):
        raise InputError(f"{field}: {path} holds states of shape {list(states.shape)} for "
                         f"{len(species)} species")
    return states, species, origin


def to_mechanism(states: np.ndarray, species: list[str], gas: ct.Solution, field: str
                 ) -> np.ndarray:
    """The states in ``gas``'s species order: a species the file lacks is 0; a species the
    mechanism lacks is an InputError (its mass would be lost)."""
    index = {name: i for i, name in enumerate(gas.species_names)}
    unknown = [s for s in species if s not in index]
    if unknown:
        raise InputError(f"{field}: species {', '.join(unknown[:5])}"
                         f"{' …' if len(unknown) > 5 else ''} are not in the mechanism "
                         f"({gas.n_species} species)")
    out = np.zeros((len(states), state_width(gas.n_species)))
    out[:, :Y_START] = states[:, :Y_START]
    columns = [Y_START + index[s] for s in species]
    out[:, columns] = states[:, Y_START:]
    return out


def clean_states(states: np.ndarray, gas: ct.Solution, field: str,
                 min_temperature_k: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Rows that Cantera can label, with notes on what was dropped or mended.

    Refused (InputError): non-finite values, mass fractions that do not sum to 1 within
    :data:`SUM_TOLERANCE`. Dropped, with a note: rows outside the mechanism's thermo range or
    deepkin's pressure range, rows below ``min_temperature_k``. Mended: small negative mass
    fractions (a solver's round-off) are clipped at 0 and each row rescaled to ΣY = 1.
    """
    notes: list[str] = []
    if not np.isfinite(states).all():
        bad = int((~np.isfinite(states).all(axis=1)).sum())
        raise InputError(f"{field}: {bad} row(s) hold NaN or infinite values")
    y = states[:, Y_START:]
    off = np.abs(y.sum(axis=1) - 1.0)
    if (off > SUM_TOLERANCE).any():
        worst = int(np.argmax(off))
        raise InputError(f"{field}: row {worst}'s mass fractions sum to {y[worst].sum():.6g}, "
                         f"not 1 (tolerance {SUM_TOLERANCE:g}): not a state")
    t = temperature(states)
    p = states[:, 1]
    keep = (t >= gas.min_temp) & (t <= gas.max_temp) & (p >= PRESSURE_RANGE_PA[0]) \
        & (p <= PRESSURE_RANGE_PA[1])
    if (~keep).any():
        notes.append(f"{field}: {int((~keep).sum())} row(s) outside {gas.min_temp:g}–"
                     f"{gas.max_temp:g} K or the pressure range dropped")
    if min_temperature_k is not None:
        cold = keep & (t < min_temperature_k)
        if cold.any():
            notes.append(f"{field}: {int(cold.sum())} row(s) below {min_temperature_k:g} K dropped")
        keep &= ~cold
    out = states[keep].copy()
    negative = int((out[:, Y_START:] < 0).any(axis=1).sum())
    if negative:
        notes.append(f"{field}: negative mass fractions clipped at 0 in {negative} row(s)")
    return normalise_mass_fractions(out), notes


def load_solver_states(files: list[str], gas: ct.Solution, min_temperature_k: float | None = None
                       ) -> tuple[np.ndarray, list[StatesFileFacts], list[str]]:
    """Every distinct labellable state of ``files``, in ``gas``'s species order, with what
    each file gave and notes on what was dropped: ``(states [n, 2 + ns], facts, notes)``.
    Exact duplicates are dropped (a solver's fresh gas repeats one state in many cells and
    times), with a note."""
    parts, facts, notes = [], [], []
    for i, name in enumerate(files):
        field = f"solver_states.files[{i}]"
        raw, species, origin = read_states(name, field)
        states, file_notes = clean_states(to_mechanism(raw, species, gas, field), gas, field,
                                          min_temperature_k)
        parts.append(states)
        notes.extend(file_notes)
        facts.append(StatesFileFacts(str(name), file_sha256(name), origin, len(raw), len(states)))
    states = np.concatenate(parts) if parts else np.empty((0, state_width(gas.n_species)))
    unique = np.unique(states, axis=0)
    if len(unique) < len(states):
        notes.append(f"solver_states.files: {len(states) - len(unique)} duplicate row(s) dropped")
    return unique, facts, notes
