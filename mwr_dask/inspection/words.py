"""Small text helpers shared by the rules and the text report (singular and plural)."""

from __future__ import annotations

#: Names listed in one sentence before "and N more".
LIST_NAMES = 8

_IRREGULAR = {"entry": "entries", "index": "indices", "volume records": "volumes record"}


def plural(count: int, word: str, many: str | None = None) -> str:
    """Return ``"1 volume"``, ``"2 volumes"``; the plural: ``many``, irregular or ``word + "s"``."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {many or _IRREGULAR.get(word, word + 's')}"


def names_list(names: list[str], limit: int = LIST_NAMES) -> str:
    """Join names as ``a, b, c and 5 more``."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def shape_text(shape: tuple[int, ...] | None) -> str:
    """Write a shape as ``64x64x64``."""
    return "?" if shape is None else "x".join(map(str, shape))
