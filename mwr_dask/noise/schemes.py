"""Tilt schemes: the views of a real tilt series, read from the files the field writes.

A :class:`TiltScheme` keeps every view of one tilt series in the order of its file: its angle
as written, its 1-based view number, its acquisition order and accumulated dose where the
format gives them, and whether it is used or excluded (and why). What the generators need is
:attr:`TiltScheme.angles`: the used angles, sorted, in the geometry of ``docs/concepts.md``
(the projection at angle theta has detector coordinate ``t = x cos theta - z sin theta`` in
the (z, y, x) volume as MRC stores it). Each format's angles are mapped onto that geometry
with the sign of :data:`SIGNS` (see ``docs/tilt-schemes.md``); ``invert=True`` flips it for
data that differ.

Formats (recognised from the extension, then from the content):

- IMOD ``.tlt`` / ``.rawtlt``: degrees, one or several per line (plain text);
- AreTomo ``.aln``: ``TILT`` column of the global table, ``# DarkFrame`` views (absent from
  the table) kept as excluded views (read with teamtomo ``alnfile``);
- SerialEM ``.mdoc``: ``TiltAngle`` of each ``[ZValue = n]`` section (teamtomo ``mdocfile``);
- RELION 5 tilt-series ``.star``: ``_rlnTomoYTilt`` where present, else
  ``_rlnTomoNominalStageTiltAngle`` (teamtomo ``starfile``);
- Warp ``.tomostar``: ``_wrpAngleTilt`` (``starfile``);
- Warp/WarpTools tilt-series ``.xml``: ``<Angles>``, views whose ``<UseTilt>`` is False
  excluded (the standard library's ElementTree on a local file: expat expands no external
  entities).

Everything here is pure: no Dask, no CLI. Problems raise :class:`TiltSchemeError` with one
sentence naming the file (and the line where it applies).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from mwr_dask.noise.geometry import tilt_angles

#: Format names and what they are.
FORMATS = {
    "range": "regular range",
    "imod": "IMOD tilt angles",
    "aretomo": "AreTomo alignment",
    "serialem": "SerialEM mdoc",
    "relion5": "RELION 5 tilt-series star",
    "warp-tomostar": "Warp tomostar",
    "warp-xml": "Warp tilt-series xml",
}

#: Sign mapping each format's angles onto the geometry of docs/concepts.md, for the volume
#: orientation the tool writes by default (see docs/tilt-schemes.md for the derivation):
#: -1 = negated, +1 = used as written.
SIGNS = {
    "range": 1,
    "imod": -1,  # tilt: t = x cos - z sin in its x-z-y output; trimvol -rx reverses z
    "aretomo": 1,  # t = x cos + z sin in its x-z-y output; -FlipVol 1 reverses z
    "serialem": -1,  # stage angles, the numbers IMOD's .rawtlt holds
    "relion5": -1,  # projection Ry(ytilt): t = x cos + z sin in its x-y-z output
    "warp-tomostar": 1,  # projection Euler(0, tilt, psi): t = x cos - z sin, x-y-z output
    "warp-xml": 1,
}

#: Reasons a view is excluded.
EXCLUDED_BY_USER = "--exclude"
EXCLUDED_DARK = "DarkFrame"
EXCLUDED_USETILT = "UseTilt False"

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
        1-based acquisition order, where the format gives it (mdoc DateTime or ZValue, RELION
        pre-exposure, Warp dose), else None.
    dose : float or None
        Accumulated dose before this view, electrons per square angstrom, where the format gives
        it (mdoc ExposureDose accumulated in acquisition order, RELION
        ``_rlnMicrographPreExposure``, Warp ``_wrpDose`` / ``<Dose>``), else None.
    excluded : str
        Empty when the view is used, else why it is not (``--exclude``, ``DarkFrame``,
        ``UseTilt False``).
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

    Attributes
    ----------
    views : tuple of View
        Every view in the file's order, used or excluded.
    source : str
        File the scheme was read from ('' for a regular range).
    format : str
        One of :data:`FORMATS`.
    sign : int
        +1 or -1: used angle = sign * file angle (the format's :data:`SIGNS`, flipped when
        ``inverted``).
    inverted : bool
        True when the user inverted the format's sign (``--invert-tilts``).
    notes : tuple of str
        Facts read from the file that do not change the angles (e.g. Warp's
        ``AreAnglesInverted``, which is a defocus handedness).
    grid : tuple of float or None
        (minangle, maxangle, anglestep) of a regular range (:func:`regular_scheme`), else None.
        Mode 2 of a regular range keeps today's wedge [minangle, maxangle] even where maxangle
        is off the grid.
    """

    views: tuple[View, ...]
    source: str = ""
    format: str = "range"
    sign: int = 1
    inverted: bool = False
    notes: tuple[str, ...] = field(default=())
    grid: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        name = self.source or "regular range"
        if self.sign not in (1, -1):
            raise TiltSchemeError(f"Tilt scheme {name}: sign must be 1 or -1, not {self.sign}.")
        used = [v.angle for v in self.views if not v.excluded]
        if len(used) < 2:
            raise TiltSchemeError(
                f"Tilt file {name}: {len(used)} view(s) left after exclusions, at least 2 needed."
            )
        bad = [a for a in used if not -90.0 < a < 90.0]
        if bad:
            raise TiltSchemeError(
                f"Tilt file {name}: angle {bad[0]:g} is outside (-90, 90) degrees."
            )
        seen: set[float] = set()
        for a in used:
            if a in seen:
                raise TiltSchemeError(f"Tilt file {name}: angle {a:g} is used twice.")
            seen.add(a)

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

    @property
    def is_regular(self) -> bool:
        """True for a regular range made by :func:`regular_scheme`."""
        return self.grid is not None

    @property
    def wedge_range(self) -> tuple[float, float]:
        """Range of mode 2's continuous wedge, degrees.

        The grid's (minangle, maxangle) for a regular range, else the used views' range.
        """
        if self.grid is not None:
            return self.grid[0], self.grid[1]
        return self.minangle, self.maxangle

    def operator_bytes(self, n: int) -> int:
        """Memory of this scheme's cached mode-1 operator for cubes of side ``n``, bytes.

        The CSR matrix of :func:`mwr_dask.noise.generators.backprojection_operator`: two
        linear-interpolation taps per used view and voxel column, each a float32 value and an
        int32 column index, plus int32 row pointers.
        """
        return 2 * len(self.used) * n * n * (4 + 4) + (n * n + 1) * 4

    def cached_bytes(self, mode: int, n: int) -> int:
        """Memory a worker keeps for this scheme once it has made a volume, bytes.

        Mode 1: the operator (:meth:`operator_bytes`) and the scratch projections (float32,
        detector bins x n). Mode 2: the wedge mask of [minangle, maxangle] (bool), the complex64
        half spectrum and the float32 draws, all over (n, n, n // 2 + 1).
        """
        if mode == 1:
            c = (n - 1) / 2.0
            theta = np.radians(self.angles)
            half = np.ceil(c * (np.abs(np.cos(theta)) + np.abs(np.sin(theta))) - 1e-9)
            bins = int(np.sum(2 * half + 2))
            return self.operator_bytes(n) + 4 * bins * n
        from mwr_dask.noise.geometry import measured_2d

        lo, hi = self.wedge_range
        half_plane = n * (n // 2 + 1)
        measured = int(measured_2d(n, lo, hi)[:, : n // 2 + 1].sum()) * n
        return half_plane * n * (1 + 8) + 8 * measured

    # ----------------------------------------------------------------- descriptions
    @property
    def name(self) -> str:
        """File name of the source (without folders), or 'regular range'."""
        return Path(self.source).name if self.source else "regular range"

    @functools.cached_property
    def digest(self) -> str:
        """First 12 hex digits of the sha256 of the used angles (sorted, little-endian float64)."""
        data = np.asarray(self.angle_tuple, dtype="<f8").tobytes()
        return hashlib.sha256(data).hexdigest()[:12]

    @property
    def label(self) -> str:
        """One-line description for a header label (<= 60 characters).

        Range, number of views used, number excluded, and the digest of the exact angle list:
        ``tilts=-54..66 n=38 excl=3 sha=0123456789ab``.
        """
        text = (
            f"tilts={_short(self.minangle)}..{_short(self.maxangle)} n={len(self.used)}"
            f" excl={len(self.excluded)} sha={self.digest}"
        )
        return text[:_LABEL_MAX]

    def describe(self) -> str:
        """Several lines for people (``--dry-run``): source, views, range, steps, gaps."""
        used, excluded = self.used, self.excluded
        if self.grid is not None:
            lo, hi, step = self.grid
            head = f"tilt scheme: regular range {_short(lo)}:{_short(hi)}:{_short(step)}"
        else:
            how = "negated" if self.sign < 0 else "used as written"
            inv = ", inverted by --invert-tilts" if self.inverted else ""
            head = f"tilt scheme: {self.source} ({FORMATS[self.format]}; angles {how}{inv})"
        lines = [head]
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
        lo, hi = self.wedge_range
        lines.append(
            f"  range: {_short(self.minangle)} .. {_short(self.maxangle)} deg{file_range}"
            f" (mode 2: the continuous wedge {_short(lo)} .. {_short(hi)})"
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
    numbers = sorted(set(int(n) for n in numbers))
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ",".join(parts)


_EXCLUDE_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_exclude(text: str) -> tuple[int, ...]:
    """View numbers of an IMOD-style exclude list, sorted and unique.

    Parameters
    ----------
    text : str
        1-based view numbers in the file's order, separated by commas or spaces; ``a-b`` is
        the range a..b inclusive, e.g. ``"1-3,40"``.

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        Empty list, an item that is not a number or range, a 0, or a range that runs backwards.
    """
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if not items:
        raise ValueError(f"--exclude {text!r} lists no views")
    out: set[int] = set()
    for item in items:
        m = _EXCLUDE_ITEM.match(item)
        if m is None:
            raise ValueError(f"--exclude item {item!r} is not a view number or a range like 1-3")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if first < 1:
            raise ValueError("--exclude counts views from 1, as IMOD does; 0 is not a view")
        if last < first:
            raise ValueError(f"--exclude range {item!r} runs backwards")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def regular_scheme(minangle: float, maxangle: float, anglestep: float) -> TiltScheme:
    """Scheme of today's regular range: the angles of :func:`mwr_dask.noise.geometry.tilt_angles`.

    Its :attr:`TiltScheme.angle_tuple` equals ``tuple(tilt_angles(...).tolist())`` exactly, so
    a generator built from it is the one the range builds.
    """
    angles = tilt_angles(minangle, maxangle, anglestep)
    views = tuple(View(number=i + 1, angle=float(a)) for i, a in enumerate(angles))
    return TiltScheme(views=views, grid=(float(minangle), float(maxangle), float(anglestep)))


# --------------------------------------------------------------------------- reading


def _fail(path: Path | str, message: str, line: int | None = None) -> TiltSchemeError:
    where = f", line {line}" if line is not None else ""
    return TiltSchemeError(f"Tilt file {path}{where}: {message}.")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _rank(keys: list) -> list[int]:
    """1-based rank of each key (ties keep the file's order)."""
    order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
    ranks = [0] * len(keys)
    for r, i in enumerate(order):
        ranks[i] = r + 1
    return ranks


def _orders_from_doses(doses: list[float | None]) -> list[int | None]:
    if any(d is None for d in doses) or len(set(doses)) < 2:
        return [None] * len(doses)
    return list(_rank(doses))


def _read_tlt(path: Path, text: str) -> tuple[list[View], dict[int, int]]:
    views: list[View] = []
    lines: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        for token in line.replace(",", " ").split():
            value = _number(token)
            if value is None:
                raise _fail(path, f"{token!r} is not a tilt angle", lineno)
            views.append(View(number=len(views) + 1, angle=value))
            lines[len(views)] = lineno
    if not views:
        raise _fail(path, "holds no tilt angles")
    return views, lines


def _read_aln(path: Path) -> tuple[list[View], dict[int, int]]:
    from alnfile.data_model import AlnData  # teamtomo alnfile: the table and DarkFrame lines

    try:
        aln = AlnData.from_file(path)
    except Exception as exc:  # pydantic or parsing errors: the file is not a usable .aln
        raise _fail(path, f"is not a readable AreTomo .aln file ({_first_line(exc)})") from None
    table = [float(g.tilt) for g in aln.GlobalAlignments]
    if not table:
        raise _fail(path, "has no alignment table (no lines after '# SEC ... TILT')")
    dark = [(int(d.section_idx), float(d.angle)) for d in aln.DarkFrames]
    total = len(table) + len(dark)
    positions = [p for p, _ in dark]
    if all(0 <= p < total for p in positions) and len(set(positions)) == len(positions):
        # DarkFrame's first number is the view's index in the tilt-sorted series (0-based)
        merged: list[tuple[float, str]] = []
        rows = iter(table)
        dark_at = dict(dark)
        for p in range(total):
            if p in dark_at:
                merged.append((dark_at[p], EXCLUDED_DARK))
            else:
                merged.append((next(rows), ""))
    else:  # inconsistent indices: place dark views by angle
        merged = sorted([(a, "") for a in table] + [(a, EXCLUDED_DARK) for _, a in dark])
    views = [View(number=i + 1, angle=a, excluded=r) for i, (a, r) in enumerate(merged)]
    return views, {}


_DATETIME_FORMATS = ("%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S")


def _parse_datetime(text) -> datetime | None:
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    for fmt in _DATETIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _read_mdoc(path: Path, text: str) -> tuple[list[View], dict[int, int]]:
    import logging

    import mdocfile  # teamtomo mdocfile

    section_lines = [
        i for i, line in enumerate(text.splitlines(), start=1) if line.strip().startswith("[ZValue")
    ]
    if not section_lines:
        raise _fail(path, "has no [ZValue = n] sections")
    logger = logging.getLogger("mdocfile")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it warns about every field it does not model
    try:
        df = mdocfile.read(path)
    except Exception as exc:
        raise _fail(path, f"is not a readable SerialEM mdoc file ({_first_line(exc)})") from None
    finally:
        logger.setLevel(level)
    if "TiltAngle" not in df.columns:
        raise _fail(path, "has no TiltAngle in its [ZValue] sections", section_lines[0])
    if "ZValue" in df.columns:
        df = df[df["ZValue"].notna()].reset_index(drop=True)
    n = len(df)
    lines = {i + 1: section_lines[i] for i in range(min(n, len(section_lines)))}
    angles: list[float] = []
    for i in range(n):
        value = df["TiltAngle"].iloc[i]
        if value is None or not math.isfinite(float(value)):
            raise _fail(path, "section has no TiltAngle", lines.get(i + 1))
        angles.append(float(value))
    zvalues = [int(z) for z in df["ZValue"]] if "ZValue" in df.columns else list(range(n))
    times = [_parse_datetime(t) for t in df["DateTime"]] if "DateTime" in df.columns else []
    if times and all(t is not None for t in times):
        orders = _rank([(t, z) for t, z in zip(times, zvalues, strict=True)])
    else:
        orders = _rank(zvalues)
    doses: list[float | None] = [None] * n
    if "ExposureDose" in df.columns:
        exposure = [float(d) if d is not None else math.nan for d in df["ExposureDose"]]
        if all(math.isfinite(d) for d in exposure) and any(d > 0 for d in exposure):
            prior = 0.0
            for i in sorted(range(n), key=lambda i: orders[i]):
                doses[i] = prior
                prior += exposure[i]
    views = [View(number=i + 1, angle=angles[i], order=orders[i], dose=doses[i]) for i in range(n)]
    return views, lines


def _star_blocks(path: Path) -> dict:
    import starfile  # teamtomo starfile

    try:
        return starfile.read(path, always_dict=True)
    except Exception as exc:
        raise _fail(path, f"is not a readable STAR file ({_first_line(exc)})") from None


def _column(block, name: str) -> list | None:
    columns = getattr(block, "columns", None)
    if columns is None or name not in columns:
        return None
    return list(block[name])


def _floats(path: Path, values: list, what: str) -> list[float]:
    out = []
    for row, value in enumerate(values, start=1):
        number = _number(str(value))
        if number is None:
            raise _fail(path, f"{what} of row {row} is {value!r}, not a number")
        out.append(number)
    return out


def _read_relion(path: Path, blocks: dict) -> tuple[list[View], dict[int, int]]:
    for block in blocks.values():
        if _column(block, "rlnTomoTiltSeriesStarFile") is not None:
            raise _fail(
                path,
                "lists tilt series, not views: give the tilt series' own .star file"
                " (its rlnTomoTiltSeriesStarFile)",
            )
    found = [
        b
        for b in blocks.values()
        if _column(b, "rlnTomoYTilt") is not None
        or _column(b, "rlnTomoNominalStageTiltAngle") is not None
    ]
    if len(found) != 1:
        raise _fail(path, f"has {len(found)} blocks of tilt angles, 1 expected")
    block = found[0]
    column = (
        "rlnTomoYTilt"
        if _column(block, "rlnTomoYTilt") is not None
        else ("rlnTomoNominalStageTiltAngle")
    )
    angles = _floats(path, _column(block, column), column)
    return _dosed_views(path, angles, block, "rlnMicrographPreExposure"), {}


def _dosed_views(path: Path, angles, block, dose_name: str) -> list[View]:
    """Return the views of a STAR loop: angles in file order, doses and their order if given."""
    column = _column(block, dose_name)
    doses: list[float | None] = (
        list(_floats(path, column, f"_{dose_name}")) if column else [None] * len(angles)
    )
    orders = _orders_from_doses(doses)
    return [
        View(number=i + 1, angle=a, order=orders[i], dose=doses[i]) for i, a in enumerate(angles)
    ]


def _read_tomostar(path: Path, blocks: dict) -> tuple[list[View], dict[int, int]]:
    found = [b for b in blocks.values() if _column(b, "wrpAngleTilt") is not None]
    if len(found) != 1:
        raise _fail(path, f"has {len(found)} loops with _wrpAngleTilt, 1 expected")
    block = found[0]
    angles = _floats(path, _column(block, "wrpAngleTilt"), "_wrpAngleTilt")
    return _dosed_views(path, angles, block, "wrpDose"), {}


def _xml_list(root, tag: str) -> list[str] | None:
    node = root.find(tag)
    if node is None or node.text is None:
        return None
    return node.text.split()


def _read_warp_xml(path: Path) -> tuple[list[View], dict[int, int], tuple[str, ...]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise _fail(path, f"is not well-formed XML ({exc})") from None
    angles_text = _xml_list(root, "Angles")
    if angles_text is None:
        raise _fail(path, "has no <Angles> element (not a Warp tilt-series .xml)")
    angles = _floats(path, angles_text, "<Angles> entry")
    use = _xml_list(root, "UseTilt")
    if use is not None and len(use) != len(angles):
        raise _fail(path, f"has {len(use)} <UseTilt> entries for {len(angles)} <Angles>")
    used = [u.lower() != "false" for u in use] if use is not None else [True] * len(angles)
    dose_text = _xml_list(root, "Dose")
    doses: list[float | None] = [None] * len(angles)
    if dose_text is not None and len(dose_text) == len(angles):
        doses = list(_floats(path, dose_text, "<Dose> entry"))
    orders = _orders_from_doses(doses)
    views = [
        View(
            number=i + 1,
            angle=a,
            order=orders[i],
            dose=doses[i],
            excluded="" if used[i] else EXCLUDED_USETILT,
        )
        for i, a in enumerate(angles)
    ]
    notes: tuple[str, ...] = ()
    if root.get("AreAnglesInverted", "False").strip().lower() == "true":
        notes = (
            "AreAnglesInverted=True (Warp's defocus handedness; it does not change the"
            " geometry of Warp's reconstruction, so the angles are not inverted for it)",
        )
    return views, {}, notes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def detect_format(path: Path | str, text: str) -> str:
    """Format of a tilt file, from its extension and content (one of :data:`FORMATS`).

    Raises
    ------
    TiltSchemeError
        When neither the extension nor the content is one of the formats.
    """
    suffix = Path(path).suffix.lower()
    head = text.lstrip()[:4096]
    if suffix in (".tlt", ".rawtlt"):
        return "imod"
    if suffix == ".aln":
        return "aretomo"
    if suffix == ".mdoc":
        return "serialem"
    if suffix == ".tomostar":
        return "warp-tomostar"
    if suffix == ".xml":
        return "warp-xml"
    if suffix == ".star":
        return "warp-tomostar" if "_wrpAngleTilt" in text else "relion5"
    # unknown extension: the content decides
    if "[ZValue" in text:
        return "serialem"
    if head.startswith("# AreTomo") or re.search(r"^# SEC\s", text, re.MULTILINE):
        return "aretomo"
    if "_wrpAngleTilt" in text:
        return "warp-tomostar"
    if "_rlnTomo" in text:
        return "relion5"
    if head.startswith("<") and "<Angles>" in text:
        return "warp-xml"
    tokens = text.replace(",", " ").split()
    if tokens and all(_number(t) is not None for t in tokens):
        return "imod"
    raise _fail(
        path,
        "is not a tilt file mwr-dask knows (.tlt/.rawtlt, .aln, .mdoc, RELION 5 .star,"
        " .tomostar, Warp .xml)",
    )


def read_tilt_file(
    path: Path | str, exclude: str | None = None, invert: bool = False
) -> TiltScheme:
    """Read the tilt scheme of one tilt series.

    Parameters
    ----------
    path : path-like
        Tilt file; its format is recognised from the extension and the content.
    exclude : str, optional
        IMOD-style list of 1-based view numbers in the file's order to leave out, e.g.
        ``"1-3,40"`` (:func:`parse_exclude`).
    invert : bool
        Flip the format's sign convention (``--invert-tilts``) for data whose tomogram has the
        wedge on the other side.

    Returns
    -------
    TiltScheme

    Raises
    ------
    TiltSchemeError
        Unreadable or unknown file, fewer than 2 views left, an angle outside (-90, 90), a
        repeated angle, an excluded view number out of range, a bad exclude list.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    text = raw.decode("utf-8", errors="replace")
    fmt = detect_format(path, text)
    notes: tuple[str, ...] = ()
    lines: dict[int, int]
    if fmt == "imod":
        views, lines = _read_tlt(path, text)
    elif fmt == "aretomo":
        views, lines = _read_aln(path)
    elif fmt == "serialem":
        views, lines = _read_mdoc(path, text)
    elif fmt == "relion5":
        views, lines = _read_relion(path, _star_blocks(path))
    elif fmt == "warp-tomostar":
        views, lines = _read_tomostar(path, _star_blocks(path))
    else:
        views, lines, notes = _read_warp_xml(path)

    if exclude is not None:
        try:
            numbers = parse_exclude(exclude)
        except ValueError as exc:
            raise _fail(path, str(exc)) from None
        over = [k for k in numbers if k > len(views)]
        if over:
            raise _fail(
                path, f"--exclude names view {over[0]}, but the file has {len(views)} views"
            )
        drop = set(numbers)
        views = [
            View(v.number, v.angle, v.order, v.dose, EXCLUDED_BY_USER)
            if v.number in drop and not v.excluded
            else v
            for v in views
        ]

    used = [v for v in views if not v.excluded]
    for v in used:
        if not -90.0 < v.angle < 90.0:
            raise _fail(
                path, f"angle {v.angle:g} is outside (-90, 90) degrees", lines.get(v.number)
            )
    seen: dict[float, View] = {}
    for v in used:
        if v.angle in seen:
            first = seen[v.angle]
            raise _fail(
                path,
                f"angle {v.angle:g} is repeated (views {first.number} and {v.number})",
                lines.get(v.number),
            )
        seen[v.angle] = v
    if len(used) < 2:
        raise _fail(path, f"{len(used)} view(s) left after exclusions, at least 2 needed")
    sign = SIGNS[fmt] * (-1 if invert else 1)
    return TiltScheme(
        views=tuple(views), source=str(path), format=fmt, sign=sign, inverted=invert, notes=notes
    )


@functools.cache
def _generator(mode: int, n: int, angles: tuple[float, ...], filter=None):
    from mwr_dask.noise.generators import BackProjection, WedgeFilter

    if mode == 1:
        return BackProjection(n, angles) if filter is None else BackProjection(n, angles, filter)
    if mode == 2:
        return WedgeFilter(n, angles[0], angles[-1])
    raise ValueError(f"mode must be 1 or 2, not {mode}")


def generator_for_scheme(mode: int, n: int, scheme: TiltScheme, filter=None):
    """Return the cached generator of a scheme (built once per process and scheme).

    Mode 1 back-projects exactly ``scheme.angles``; mode 2 filters with the binary wedge of the
    continuous range [``scheme.minangle``, ``scheme.maxangle``]. The cache is keyed by the angle
    list and is unbounded, so that a mixture of k schemes, used in turn, never rebuilds an
    operator (its memory: :meth:`TiltScheme.operator_bytes` per scheme). A regular scheme gives
    the same volumes as :func:`mwr_dask.noise.generators.generator_for` of its range.

    Parameters
    ----------
    mode : int
        1 = back-projection, 2 = wedge filter.
    n : int
        Cube side, voxels.
    scheme : TiltScheme
        The views; only its used angles matter.
    filter : mwr_dask.noise.filters.FilterSpec or None
        Mode 1's reconstruction filter; None (or ``none``) for the unfiltered back-projection.
    """
    if filter is not None and filter.is_none:
        filter = None
    extra = () if filter is None else (filter,)
    if scheme.grid is not None:
        from mwr_dask.noise.generators import generator_for

        return generator_for(int(mode), int(n), *scheme.grid, *extra)
    return _generator(int(mode), int(n), scheme.angle_tuple, *extra)
