"""Models shipped inside the package and lookup of a model by name or path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kinetics.model.model_file import ModelMeta, read_model_file
from mechanisms.errors import InputError
from mechanisms.state import ONE_ATM_PA

SHIPPED_DIR = Path(__file__).parents[1] / "shipped"
DEFAULT_MODEL = "h2-air"


@dataclass
class ModelEntry:
    name: str
    path: Path
    meta: ModelMeta

    def summary(self) -> str:
        m = self.meta
        domain = m.domain or {}
        fuel, oxidizer = m.streams
        return (f"{self.name:<14} {m.mechanism_source} ({len(m.species)} species), dt {m.dt_s:g} s, "
                f"{f'{fuel} / {oxidizer}, ' if fuel and oxidizer else ''}"
                f"T {m.temperature_k[0]:.0f}–{m.temperature_k[1]:.0f} K, "
                f"P {m.pressure_pa[0] / ONE_ATM_PA:.3g}–{m.pressure_pa[1] / ONE_ATM_PA:.3g} atm, "
                f"{'+ near-equilibrium network, ' if m.tail else ''}"
                f"{_induction(m.induction)}"
                f"{'occupancy domain, ' if domain.get('check') == 'occupancy' else ''}"
                f"{_precision(m.inference_precision)}"
                f"{'router, ' if m.router else ''}"
                f"{self.path.stat().st_size / 2**20:.1f} MiB  {self.path}")


def _precision(precision: str) -> str:
    """The validated precision where it is not float32: ``bfloat16 where native, ``."""
    return "" if precision == "float32" else f"{precision} where native, "


def _induction(induction: dict | None) -> str:
    """The summary's words for an induction network and its resolution floor (``fallback_below``:
    its cells below it go to Cantera)."""
    if not induction:
        return ""
    floor = induction.get("fallback_below", 0.0)
    return f"+ induction network (floor {floor:g}), " if floor else "+ induction network, "


def list_models(model_dir: str | Path | None = None) -> list[ModelEntry]:
    """Models in ``model_dir`` (default: the shipped ones), one per ``*.safetensors`` file."""
    directory = Path(model_dir) if model_dir else SHIPPED_DIR
    if not directory.is_dir():
        raise InputError(f"model-dir: {directory} is not a directory")
    entries = []
    for path in sorted(directory.glob("*.safetensors")):
        meta, _, _ = read_model_file(path)
        entries.append(ModelEntry(path.stem, path, meta))
    return entries


def resolve_model(name_or_path: str | Path) -> Path:
    """A model file's path from a path or the name of a shipped model."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED_DIR / f"{name_or_path}.safetensors"
    if shipped.is_file():
        return shipped
    names = ", ".join(p.stem for p in SHIPPED_DIR.glob("*.safetensors")) or "none"
    raise InputError(f"model: '{name_or_path}' is neither a file nor a shipped model "
                     f"(shipped: {names})")
