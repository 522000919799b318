"""Errors the user can act on: each prints as one line naming the thing and what was expected."""


class HarnessError(Exception):
    """Bad input or state; the CLI prints the message on one line and exits non-zero."""


def unknown(kind: str, name: str, known: "list[str] | tuple[str, ...]") -> HarnessError:
    """The error for a name that is not in a registry (fixture, format, runtime)."""
    return HarnessError(f"unknown {kind} {name!r}: expected one of {', '.join(sorted(known))}")
