"""Reduced mechanisms: in-memory ``ct.Solution`` for candidates, and the YAML file of the answer.

A reduced model keeps the chosen species, every reaction whose reactants, products, explicit
collider (``H + O2 + AR``) and reaction orders involve only kept species, and drops third-body
efficiencies of removed species. Thermo and transport data travel with the species objects. The
same :meth:`ReducedModelBuilder.reactions` serves candidate evaluation and the written file, so the
file is exactly the model that was scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cantera as ct
import numpy as np
import yaml

from mechanisms.atomic_io import atomic_write
from mechanisms.loading import has_transport, mechanism_sha256, solution_from_yaml

_BUILDERS: dict[tuple[str, str], ReducedModelBuilder] = {}


class ReducedModelBuilder:
    """Builds reduced models of one detailed mechanism ``gas`` from boolean species masks ``[ns]``."""

    def __init__(self, gas: ct.Solution):
        self.gas = gas
        self.species_names = list(gas.species_names)
        self._species = gas.species()
        self._reactions = gas.reactions()
        index = {n: i for i, n in enumerate(self.species_names)}
        self._needs: list[np.ndarray] = []
        self._efficiency_species: list[frozenset[str]] = []
        for rxn in self._reactions:
            names = set(rxn.reactants) | set(rxn.products) | set(rxn.orders)
            third = rxn.third_body
            effs: frozenset[str] = frozenset()
            if third is not None:
                if third.name != "M":
                    names.add(third.name)
                else:
                    effs = frozenset(third.efficiencies)
            self._needs.append(np.array(sorted(index[n] for n in names), dtype=np.intp))
            self._efficiency_species.append(effs)
        self._modified: dict[tuple[int, frozenset[str]], ct.Reaction] = {}
        self.has_transport = has_transport(gas)

    @property
    def n_species(self) -> int:
        return len(self.species_names)

    def reaction_mask(self, keep: np.ndarray) -> np.ndarray:
        """Boolean ``[n_reactions]``: reactions whose species are all in ``keep`` (bool ``[ns]``)."""
        keep = np.asarray(keep, dtype=bool)
        return np.array([bool(keep[need].all()) for need in self._needs])

    def reactions(self, keep: np.ndarray) -> list[ct.Reaction]:
        """The kept reactions, with third-body efficiencies of removed species dropped."""
        keep = np.asarray(keep, dtype=bool)
        kept_names = {n for n, k in zip(self.species_names, keep) if k}
        out = []
        for i in np.nonzero(self.reaction_mask(keep))[0]:
            effs = self._efficiency_species[i]
            removed = effs - kept_names
            if not removed:
                out.append(self._reactions[i])
                continue
            cache_key = (int(i), frozenset(removed))
            rxn = self._modified.get(cache_key)
            if rxn is None:
                data = _plain(self._reactions[i].input_data)
                data["efficiencies"] = {k: v for k, v in data.get("efficiencies", {}).items()
                                        if k not in removed}
                rxn = ct.Reaction.from_dict(data, self.gas)
                self._modified[cache_key] = rxn
            out.append(rxn)
        return out

    def solution(self, keep: np.ndarray, transport: bool = False, name: str = "reduced") -> ct.Solution:
        """A new ``ct.Solution`` of the reduced model (transport only when asked and available)."""
        keep = np.asarray(keep, dtype=bool)
        species = [s for s, k in zip(self._species, keep) if k]
        model = self.gas.transport_model if (transport and self.has_transport) else "none"
        gas = ct.Solution(thermo="ideal-gas", kinetics="gas", transport_model=model,
                          species=species, reactions=self.reactions(keep), name=name)
        gas.TP = 300.0, ct.one_atm
        return gas

    def write_yaml(self, keep: np.ndarray, path: str | Path, description: str,
                   provenance: dict[str, Any], name: str = "reduced") -> str:
        """Write the reduced model (with transport when the source has it) to ``path`` atomically.

        ``description`` becomes the file's ``description``; ``provenance`` (plain data) is stored
        under ``deepkin-reduction``. Returns the sha256 of the written text.
        """
        gas = self.solution(keep, transport=True, name=name)
        gas.update_user_header({"description": description,
                                "deepkin-reduction": _plain(provenance)})
        atomic_write(path, lambda tmp: gas.write_yaml(str(tmp)), suffix=".yaml")
        return mechanism_sha256(Path(path).read_text(encoding="utf-8"))


def builder_for(yaml_text: str, phase: str, sha256: str) -> ReducedModelBuilder:
    """This process's cached builder for a detailed mechanism (workers build it once)."""
    key = (sha256, phase)
    builder = _BUILDERS.get(key)
    if builder is None:
        builder = ReducedModelBuilder(solution_from_yaml(yaml_text, phase, sha256))
        _BUILDERS[key] = builder
    return builder


def _plain(data: Any) -> Any:
    """Cantera ``AnyMap`` / numpy values as plain Python (dict, list, float, str)."""
    return yaml.safe_load(yaml.safe_dump(_to_builtin(data)))


def _to_builtin(data: Any) -> Any:
    if hasattr(data, "items"):
        return {str(k): _to_builtin(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_to_builtin(v) for v in data]
    if isinstance(data, np.generic):
        return data.item()
    if isinstance(data, np.ndarray):
        return data.tolist()
    return data
