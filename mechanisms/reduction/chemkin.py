"""The reduced mechanism as Chemkin files: mechanism, thermo and (when the source has it) transport.

Cantera's ``yaml2ck`` writes them. Four of its habits are not standard Chemkin-II, and OpenFOAM
v1912's ``chemkinToFoam`` refuses each, so they are changed (Cantera's ``ck2yaml`` reads either):

- ``THERMO`` followed by a line of temperature ranges: standard is ``THERMO ALL``, with the three
  temperatures as 3F10 (right-justified in ten columns each);
- element symbols in mixed case (``Ar``, in ``ELEMENTS`` and in the thermo records' columns
  25–44): OpenFOAM reads only upper-case symbols;
- ``MOLE`` as the quantity unit on the ``REACTIONS`` line: standard is ``MOLES``;
- non-ASCII characters in the comments it copies from the mechanism's description (typographic
  quotes in ``nDodecane_Reitz.yaml``): written as ASCII.

``chemkinToFoam``'s third argument is not Chemkin transport data but an OpenFOAM dictionary of
Sutherland coefficients; the Chemkin transport file is for Chemkin and Cantera.
"""

from __future__ import annotations

import re
import tempfile
import unicodedata
from pathlib import Path

import cantera as ct

from mechanisms.atomic_io import atomic_write_text
from mechanisms.loading import has_transport


def chemkin_paths(prefix: Path, transport: bool) -> dict[str, Path]:
    """The files :func:`write_chemkin` writes for ``prefix``: ``<prefix>.inp``,
    ``<prefix>-thermo.dat`` and, with ``transport``, ``<prefix>-transport.dat``."""
    paths = {"mechanism": prefix.with_name(f"{prefix.name}.inp"),
             "thermo": prefix.with_name(f"{prefix.name}-thermo.dat")}
    if transport:
        paths["transport"] = prefix.with_name(f"{prefix.name}-transport.dat")
    return paths


def write_chemkin(gas: ct.Solution, prefix: str | Path) -> dict[str, Path]:
    """Write ``gas`` as Chemkin files beside ``prefix`` (see :func:`chemkin_paths`), atomically;
    returns their paths by kind. Transport data are written when ``gas`` has a transport model."""
    paths = chemkin_paths(Path(prefix), has_transport(gas))
    with tempfile.TemporaryDirectory(prefix="deepkin-chemkin-") as tmp:
        raw = {kind: Path(tmp) / path.name for kind, path in paths.items()}
        gas.write_chemkin(raw["mechanism"], raw["thermo"], raw.get("transport"), overwrite=True,
                          quiet=True)
        texts = {kind: path.read_text(encoding="utf-8") for kind, path in raw.items()}
    texts = {kind: ascii_text(text) for kind, text in texts.items()}
    texts["mechanism"] = standard_mechanism(texts["mechanism"])
    texts["thermo"] = standard_thermo(texts["thermo"])
    for kind, path in paths.items():
        atomic_write_text(path, texts[kind])
    return paths


TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                            "\u2013": "-", "\u2014": "-"})


def ascii_text(text: str) -> str:
    """``text`` in ASCII: accents dropped, typographic quotes and dashes plain, anything else ``?``."""
    text = unicodedata.normalize("NFKD", text.translate(TYPOGRAPHY))
    return "".join(c for c in text if not unicodedata.combining(c)).encode("ascii", "replace").decode()


def standard_mechanism(text: str) -> str:
    """yaml2ck's mechanism text with upper-case element symbols and ``MOLES`` as the unit."""
    text = re.sub(r"^(ELEM\w*[ \t]*\n)(.*?)(\n[ \t]*END)",
                  lambda m: m.group(1) + m.group(2).upper() + m.group(3), text, count=1,
                  flags=re.S | re.M | re.I)
    return re.sub(r"^REACTIONS\b[^\n]*", lambda m: " ".join(
        "MOLES" if token.upper() == "MOLE" else token for token in m.group(0).split()), text,
        count=1, flags=re.M)


def standard_thermo(text: str) -> str:
    """yaml2ck's thermo text with ``THERMO ALL``, a 3F10 temperature line and upper-case element
    symbols in every record's first line."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().upper() == "THERMO":
            out.append("THERMO ALL")
            out.append("".join(f"{float(t):10.3f}" for t in lines[i + 1].split()[:3]))
            i += 2
            continue
        if len(line) >= 80 and line[79] == "1":  # a record's first line: elements in columns 25-44
            line = line[:24] + "".join(line[k:k + 2].upper() + line[k + 2:k + 5]
                                       for k in range(24, 44, 5)) + line[44:]
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"
