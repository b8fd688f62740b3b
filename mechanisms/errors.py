"""Error types whose message is meant for the user (one readable line), and their wording helpers."""

from __future__ import annotations

import difflib


class DeepkinError(Exception):
    """Base class of every error deepkin reports to a user without a traceback."""


class InputError(DeepkinError, ValueError):
    """Bad user input: the message names the field and the reason."""


class StorageError(DeepkinError):
    """Writing a file failed (a full disk, an I/O error): the message names the file, the reason
    and what is kept."""


def cantera_message(exc: BaseException) -> str:
    """The one informative line of a (multi-line, bannered) Cantera error message."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and set(ln) != {"*"} and not ln.startswith("CanteraError thrown by")]
    return lines[0] if lines else type(exc).__name__


def did_you_mean(name: object, choices: list[str] | tuple[str, ...], case_hint: bool = False) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close.

    ``case_hint`` adds that names are case-sensitive when ``name`` differs from a choice only in
    case (species names).
    """
    text = str(name)
    if case_hint:
        lowered = {c.lower(): c for c in choices}
        if text.lower() in lowered:
            return f" (did you mean '{lowered[text.lower()]}'? species names are case-sensitive)"
    match = difflib.get_close_matches(text, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
