"""A Cantera mechanism as OpenFOAM v1912 files: ``reactions`` (species and reactions) and a thermo
file (NASA-7 as janaf, Sutherland transport), so that OpenFOAM's own chemistry and energy
equation use exactly the mechanism a deepkin model was trained on.

The route: Cantera's ``yaml2ck`` writes Chemkin files; four fixes make OpenFOAM's
``chemkinToFoam`` accept them (``THERMO`` → ``THERMO ALL``, the temperature line right-justified
as 3F10, element symbols upper case (``Ar`` → ``AR``), units ``MOLE`` → ``MOLES``); Sutherland
coefficients are fitted to Cantera's pure-species viscosities (the transport files of OpenFOAM's
tutorials are all zeros); ``chemkinToFoam`` writes the OpenFOAM files. A low-temperature bound of
NASA-7 data above 200 K is lowered to 200 K: OpenFOAM clamps T to the range and warns for every
cell (a flame's 300 K inlet dips a fraction of a kelvin below 300 K), where Cantera evaluates the
same polynomial.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cantera as ct
import numpy as np

from couplers.openfoam.foam import foam_file, run_application, write_foam_file

SUTHERLAND_FIT_K = (300.0, 3000.0)  # temperatures of the viscosity fit
LOWEST_T_K = 200.0  # thermo ranges are extended down to this (the same polynomial, as Cantera uses it)
REACTIONS_FILE = "reactions"
THERMO_FILE = "thermo.compressibleGas"


@dataclass
class SutherlandFit:
    """``mu = As sqrt(T) / (1 + Ts / T)`` (Pa s, T in K) for one species, and its fit error."""

    As: float
    Ts: float
    max_rel_error: float


def fix_chemkin(mechanism: str, thermo: str) -> tuple[str, str]:
    """yaml2ck's mechanism and thermo texts as OpenFOAM's Chemkin reader takes them."""
    mechanism = mechanism.split("\nTRANSPORT", 1)[0].rstrip() + "\n"

    def upper_elements(match: re.Match) -> str:
        return match.group(1) + match.group(2).upper() + match.group(3)

    mechanism = re.sub(r"^(ELEM\w*\s*\n)(.*?)(\n\s*END)", upper_elements, mechanism, count=1,
                       flags=re.S | re.M | re.I)
    mechanism = re.sub(r"^REACTIONS\b[^\n]*", lambda m: " ".join(
        "MOLES" if token.upper() == "MOLE" else token for token in m.group(0).split()), mechanism,
        count=1, flags=re.M)
    lines = thermo.splitlines()
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().upper() == "THERMO":
            out.append("THERMO ALL")
            temps = lines[i + 1].split()
            out.append("".join(f"{float(t):10.3f}" for t in temps[:3]))
            i += 2
            continue
        if len(line) >= 80 and line[79] == "1":  # a species' first line: element symbols, cols 25-44
            fields = line[24:44]
            fields = "".join(fields[k:k + 5][:2].upper() + fields[k:k + 5][2:] for k in range(0, 20, 5))
            line = line[:24] + fields + line[44:]
            t_low = float(line[45:55])
            if t_low > LOWEST_T_K:  # below T_low OpenFOAM clamps and warns every cell; Cantera extrapolates
                line = line[:45] + f"{LOWEST_T_K:<10.3f}" + line[55:]
        out.append(line)
        i += 1
    return mechanism, "\n".join(out) + "\n"


def sutherland_fits(gas: ct.Solution, temperatures_k: tuple[float, float] = SUTHERLAND_FIT_K
                    ) -> dict[str, SutherlandFit]:
    """Sutherland coefficients per species, fitted to Cantera's pure-species viscosity.

    ``sqrt(T)/mu = 1/As + (Ts/As)/T`` is linear in ``1/T``: a least-squares line on 60 points
    between ``temperatures_k`` (K) at 1 atm. Needs a mechanism with transport data.
    """
    temps = np.linspace(*temperatures_k, 60)
    fits = {}
    for name in gas.species_names:
        mu = np.empty_like(temps)
        for j, t in enumerate(temps):
            gas.TPX = t, ct.one_atm, {name: 1.0}
            mu[j] = gas.viscosity
        slope, intercept = np.polyfit(1.0 / temps, np.sqrt(temps) / mu, 1)
        a_s = 1.0 / intercept
        t_s = slope * a_s
        fitted = a_s * np.sqrt(temps) / (1.0 + t_s / temps)
        fits[name] = SutherlandFit(float(a_s), float(t_s), float(np.max(np.abs(fitted / mu - 1.0))))
    return fits


def transport_dict(fits: dict[str, SutherlandFit]) -> str:
    """The body of a chemkinToFoam transport dictionary."""
    blocks = [f"{name}\n{{\n    transport\n    {{\n        As {fit.As:.9g};\n        Ts {fit.Ts:.9g};\n"
              f"    }}\n}}\n" for name, fit in fits.items()]
    return "\n".join(blocks)


def write_foam_mechanism(gas: ct.Solution, constant_dir: Path) -> dict[str, SutherlandFit]:
    """Write ``constant/reactions`` and ``constant/thermo.compressibleGas`` for ``gas``.

    Runs OpenFOAM's ``chemkinToFoam`` (so OpenFOAM must be installed); returns the Sutherland
    fits. Raises :class:`couplers.openfoam.foam.FoamError` when chemkinToFoam refuses the files.
    """
    from cantera import yaml2ck

    constant_dir = Path(constant_dir)
    constant_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deepkin-ck-") as tmp:
        work = Path(tmp)
        yaml2ck.convert(gas, mechanism_path=work / "chem.raw", thermo_path=work / "therm.raw",
                        transport_path=work / "tran.raw", overwrite=True)
        mechanism, thermo = fix_chemkin((work / "chem.raw").read_text(), (work / "therm.raw").read_text())
        (work / "chem.inp").write_text(mechanism)
        (work / "therm.dat").write_text(thermo)
        fits = sutherland_fits(gas)
        (work / "transportProperties").write_text(foam_file("transportProperties", transport_dict(fits),
                                                            location="chemkin"))
        # chemkinToFoam wants a case: an empty one with a controlDict
        write_foam_file(work / "system" / "controlDict", "application chemkinToFoam;\n")
        run_application("chemkinToFoam", work, str(work / "chem.inp"), str(work / "therm.dat"),
                        str(work / "transportProperties"), str(constant_dir / REACTIONS_FILE),
                        str(constant_dir / THERMO_FILE), log=constant_dir.parent / "log.chemkinToFoam")
    return fits
