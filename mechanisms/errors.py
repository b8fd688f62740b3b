"""Error types whose message is meant for the user, one readable line."""


class DeepkinError(Exception):
    """Base class of every error deepkin reports to a user without a traceback."""


class InputError(DeepkinError, ValueError):
    """Bad user input: the message names the field and the reason."""


def cantera_message(exc: BaseException) -> str:
    """The one informative line of a (multi-line, bannered) Cantera error message."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and set(ln) != {"*"} and not ln.startswith("CanteraError thrown by")]
    return lines[0] if lines else type(exc).__name__
