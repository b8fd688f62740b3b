"""Reading YAML configuration files (sampling recipes, training settings, reduction inputs).

One reader and one set of error lines: a missing or unreadable file, invalid YAML (with its line),
a document that is not a mapping, an unknown key (with the closest known one); ``is_number`` is
the one test of a numeric setting's type.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from mechanisms.errors import InputError, did_you_mean


def read_yaml_mapping(path: str | Path, field: str = "config", expected: str = "keys") -> dict[str, Any]:
    """The mapping held by the YAML file at ``path`` (an empty file is ``{}``).

    Raises :class:`InputError` naming ``field``: the file is missing or unreadable, is not valid
    YAML (the message gives the line), or does not hold a mapping (``expected`` says of what).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{field}: file '{path}' not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{field}: cannot read '{path}': {getattr(exc, 'strerror', None) or exc}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise InputError(f"{field}: '{path}' is not valid YAML{where}" + (f" ({problem})" if problem else ""))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{field}: '{path}' must hold a mapping of {expected}, not a "
                         f"{type(data).__name__}")
    return data


def check_keys(data: dict[str, Any], known: Iterable[str], prefix: str = "", what: str = "key",
               list_known: bool = False) -> None:
    """:class:`InputError` for the first key of ``data`` not in ``known``.

    The line names the key by its dotted path (``prefix`` + key, e.g. ``autoignition.t_max``),
    then the closest known key and, with ``list_known``, all of them.
    """
    known = list(known)
    for key in data:
        if key not in known:
            every = f" (known: {', '.join(known)})" if list_known else ""
            raise InputError(f"{prefix}{key}: unknown {what}{did_you_mean(key, known)}{every}")


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, not a string such as "1e-3")."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
