"""Tilt schemes: the views of one real tilt series and which of them are used.

A :class:`TiltScheme` keeps every view of one tilt series in the order of its file: its angle
as written, its 1-based view number, its acquisition order and accumulated dose where the
format gives them, and whether it is used or excluded (and why). What the generators need is
:attr:`TiltScheme.angle_tuple`: the used angles, sorted, in the geometry of
``docs/concepts.md`` (the projection at angle theta has detector coordinate
``t = x cos theta - z sin theta`` in the (z, y, x) volume as MRC stores it); the files are read
into schemes by :mod:`mwr_dask.noise.tiltfiles`.

Everything here is pure: no Dask, no CLI. Problems raise :class:`TiltSchemeError` with one
sentence naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mwr_dask.noise.exactmath import shortest

#: Format names and what they are.
FORMATS = {
    "imod": "IMOD tilt angles",
    "aretomo": "AreTomo alignment",
    "serialem": "SerialEM mdoc",
    "relion5": "RELION 5 tilt-series star",
    "warp-tomostar": "Warp tomostar",
    "warp-xml": "Warp tilt-series xml",
    "isonet2": "IsoNet2 tilt range",
}

#: Reasons a view is excluded.
EXCLUDED_BY_USER = "--exclude"
EXCLUDED_DARK = "DarkFrame"
EXCLUDED_USETILT = "UseTilt False"
#: Views of the full series (``all_views``) that a RELION or Warp file no longer lists.
EXCLUDED_ABSENT = "absent from the file"
#: Most views of one tilt series: real ones have 30-180. A file with more is not a tilt
#: series (and one mode-1 operator of 10,000 views of 64^3 is already 650 MB).
MAX_VIEWS = 10_000

_LABEL_MAX = 60


class TiltSchemeError(ValueError):
    """A tilt file that cannot be used; the message is one sentence naming the file."""


@dataclass(frozen=True)
class View:
    """One view (tilt image) of a tilt series.

    Attributes
    ----------
    number : int
        1-based position in the file's order (IMOD's view numbers, as ``--exclude`` counts).
    angle : float
        Tilt angle as written in the file, degrees (before the sign mapping).
    order : int or None
        1-based acquisition order, where the format gives it (mdoc DateTime, PriorRecordDose
        or ZValue, RELION pre-exposure, Warp dose), else None.
    dose : float or None
        Accumulated dose before this view, electrons per square angstrom, where the format gives
        it (mdoc ExposureDose accumulated in acquisition order, RELION
        ``_rlnMicrographPreExposure``, Warp ``_wrpDose`` / ``<Dose>``, a .tlt dose column, as
        written: Warp 1's were not pre-exposures, :func:`mwr_dask.noise.dose.file_doses`
        converts), else None.
    excluded : str
        Empty when the view is used, else why it is not (``--exclude``, ``DarkFrame``,
        ``UseTilt False``, ``absent from the file``).
    """

    number: int
    angle: float
    order: int | None = None
    dose: float | None = None
    excluded: str = ""


def _short(value: float) -> str:
    """Angle with at most two decimals and no trailing zeros (``-60``, ``1.5``)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class TiltScheme:
    """The views of one tilt series and which of them are used; frozen and hashable.

    ``sign``: used angle = sign * file angle (the format's :data:`SIGNS`, flipped when
    ``inverted``, ``--invert-tilts``). ``notes``: facts that do not change the angles (e.g.
    Warp's ``AreAnglesInverted``, a defocus handedness).
    """

    views: tuple[View, ...]
    source: str = ""
    format: str = "imod"
    sign: int = 1
    inverted: bool = False
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise TiltSchemeError(f"Tilt file {self.name}: sign must be 1 or -1, not {self.sign}.")
        found = views_problem(self.views)
        if found is not None:
            raise TiltSchemeError(f"Tilt file {self.name}: {found[0]}.")

    # ----------------------------------------------------------------- views and angles
    @property
    def used(self) -> tuple[View, ...]:
        """Used views, in the file's order."""
        return tuple(v for v in self.views if not v.excluded)

    @property
    def excluded(self) -> tuple[View, ...]:
        """Excluded views, in the file's order."""
        return tuple(v for v in self.views if v.excluded)

    @functools.cached_property
    def angle_tuple(self) -> tuple[float, ...]:
        """Used angles in the geometry of docs/concepts.md, degrees, ascending (hashable)."""
        # + 0.0 turns a negated 0.0 (-0.0) into 0.0, so that equal schemes hash equal
        return tuple(sorted(self.sign * v.angle + 0.0 for v in self.used))

    @property
    def angles(self) -> np.ndarray:
        """Used angles, degrees, ascending, float64 (a new array on each call)."""
        return np.array(self.angle_tuple, dtype=np.float64)

    @property
    def minangle(self) -> float:
        """Smallest used angle, degrees."""
        return self.angle_tuple[0]

    @property
    def maxangle(self) -> float:
        """Largest used angle, degrees."""
        return self.angle_tuple[-1]

    @property
    def steps(self) -> np.ndarray:
        """Differences between consecutive used angles, degrees (length: views used - 1)."""
        return np.diff(self.angles)

    @property
    def median_step(self) -> float:
        """Median step between consecutive used angles, degrees."""
        return float(np.median(self.steps))

    @property
    def largest_gap(self) -> float:
        """Largest step between consecutive used angles, degrees."""
        return float(self.steps.max())

    @property
    def gap_note(self) -> str | None:
        """One line where the views leave a gap wider than twice their median step, else None."""
        text = self._gap_text()
        return None if text is None else f"{self.name}: {text}"

    def _gap_text(self) -> str | None:
        steps = self.steps
        k = int(np.argmax(steps))
        if steps[k] <= 2.0 * self.median_step + 1e-9:
            return None
        a = self.angle_tuple
        return (
            f"the views leave a {_short(steps[k])} deg gap between {_short(a[k])} and"
            f" {_short(a[k + 1])} deg (median step {_short(self.median_step)} deg);"
            " mode 1 reproduces it, mode 2 fills the whole range"
        )

    # ----------------------------------------------------------------- descriptions
    @property
    def name(self) -> str:
        """File name of the source (without folders)."""
        return Path(self.source).name

    @functools.cached_property
    def digest(self) -> str:
        """First 12 hex digits of the sha256 of the used angles (sorted, little-endian float64)."""
        data = np.asarray(self.angle_tuple, dtype="<f8").tobytes()
        return hashlib.sha256(data).hexdigest()[:12]

    @property
    def label(self) -> str:
        """One-line description for a header label (<= 60 characters).

        Range, number of views used, number excluded, and the digest of the exact angle list:
        ``tilts=-54..66 n=38 excl=3 sha=0123456789ab``. The range has two decimals, or every
        digit where two would not read back as a range inside (-90, 90) (``-89.996``).
        """
        lo, hi = _short(self.minangle), _short(self.maxangle)
        if not -90.0 < float(lo) < float(hi) < 90.0:  # rounding would not read back as a range
            lo, hi = shortest(self.minangle), shortest(self.maxangle)
        text = f"tilts={lo}..{hi} n={len(self.used)} excl={len(self.excluded)} sha={self.digest}"
        return text[:_LABEL_MAX]

    def describe(self) -> str:
        """Several lines for people (``--dry-run``): source, views, range, steps, gaps."""
        used, excluded = self.used, self.excluded
        how = "negated" if self.sign < 0 else "used as written"
        inv = ", inverted by --invert-tilts" if self.inverted else ""
        lines = [f"tilt scheme: {self.source} ({FORMATS[self.format]}; angles {how}{inv})"]
        lines.append(
            f"  views: {len(self.views)} in file, {len(used)} used, {len(excluded)} excluded"
        )
        reasons: dict[str, list[int]] = {}
        for v in excluded:
            reasons.setdefault(v.excluded, []).append(v.number)
        for reason, numbers in reasons.items():
            lines.append(f"  excluded ({reason}): views {format_view_list(numbers)}")
        file_range = ""
        if self.sign < 0:
            file_range = f", {_short(-self.maxangle)} .. {_short(-self.minangle)} in the file"
        lo, hi = _short(self.minangle), _short(self.maxangle)
        lines.append(
            f"  range: {lo} .. {hi} deg{file_range} (mode 2: the continuous wedge {lo} .. {hi})"
        )
        steps = self.steps
        lines.append(
            f"  steps: median {_short(self.median_step)} deg, smallest {_short(steps.min())},"
            f" largest gap {_short(self.largest_gap)} deg"
        )
        note = self._gap_text()
        if note is not None:
            lines.append(f"  note: {note}")
        lines.extend(f"  note: {text}" for text in self.notes)
        lines.append(f"  label: {self.label}")
        return "\n".join(lines)


def format_view_list(numbers) -> str:
    """View numbers as IMOD writes lists: ``1-3,40``."""
    runs = itertools.groupby(enumerate(sorted({int(n) for n in numbers})), lambda p: p[1] - p[0])
    parts = [[n for _, n in run] for _, run in runs]
    return ",".join(str(p[0]) if len(p) == 1 else f"{p[0]}-{p[-1]}" for p in parts)


_EXCLUDE_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_exclude(text: str, views: int) -> tuple[int, ...]:
    """View numbers of an IMOD-style exclude list, sorted and unique.

    ``text``: 1-based numbers and inclusive ranges, e.g. ``"1-3,40"``. A number above ``views``
    is found before any range is expanded (``1-1000000000000`` costs nothing).
    """
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if not items:
        raise ValueError(f"--exclude {text[:40]!r} lists no views")
    ranges = []
    for item in items:
        m = _EXCLUDE_ITEM.match(item)
        if m is None:
            raise ValueError(
                f"--exclude item {item[:40]!r} is not a view number or a range like 1-3"
            )
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if first < 1:
            raise ValueError("--exclude counts views from 1, as IMOD does; 0 is not a view")
        if last < first:
            raise ValueError(f"--exclude range {item[:40]!r} runs backwards")
        if last > views:
            over = max(first, views + 1)
            raise ValueError(f"--exclude names view {over}, but the file has {views} views")
        ranges.append(range(first, last + 1))
    return tuple(sorted({k for r in ranges for k in r}))


def views_problem(views) -> tuple[str, View | None] | None:
    """Return why ``views`` cannot be a tilt scheme, and the view concerned; None if they can.

    The readers call it to name the file's line of the view; :class:`TiltScheme` again.
    """
    if len(views) > MAX_VIEWS:
        return f"has {len(views):,} views, more than the {MAX_VIEWS:,} of any tilt series", None
    seen: dict[float, View] = {}
    for v in views:
        if v.excluded:
            continue
        if not -90.0 < v.angle < 90.0:
            return f"angle {v.angle:g} is outside (-90, 90) degrees", v
        if v.angle in seen:
            return f"angle {v.angle:g} is repeated (views {seen[v.angle].number} and {v.number})", v
        seen[v.angle] = v
    if len(seen) < 2:
        return f"{len(seen)} view(s) left after exclusions, at least 2 needed", None
    return None
