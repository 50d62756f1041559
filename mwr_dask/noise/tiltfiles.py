"""Tilt files as the field writes them, read into :class:`~mwr_dask.noise.schemes.TiltScheme`.

Formats (recognised from the extension, then from the content); text is read as UTF-8 with or
without a byte-order mark, with any line ends:

- IMOD ``.tlt`` / ``.rawtlt``: the first number of each line is the angle, in degrees; further
  columns, the same on every line, are read as what they hold (:func:`_extra_columns`);
- AreTomo ``.aln``: ``TILT`` column of the global table, ``# DarkFrame`` views (absent from
  the table) kept as excluded views (teamtomo ``alnfile``; AreTomo 1.x and AreTomo2 1.0 files,
  which lack some header lines, line by line with the same library's row models);
- SerialEM ``.mdoc``: ``TiltAngle`` of each ``[ZValue = n]`` section, in ZValue order
  (teamtomo ``mdocfile``); montage and frame-series mdocs are refused;
- RELION 5 tilt-series ``.star``: ``_rlnTomoYTilt`` where present, else
  ``_rlnTomoNominalStageTiltAngle`` (teamtomo ``starfile``);
- Warp ``.tomostar``: ``_wrpAngleTilt`` (``starfile``);
- Warp/WarpTools tilt-series ``.xml``: ``<Angles>``, views whose ``<UseTilt>`` is False
  excluded (the standard library's ElementTree on a local file: expat expands no external
  entities).

Each format's angles are mapped onto the geometry of ``docs/concepts.md`` with the sign of
:data:`SIGNS` (see ``docs/tilt-schemes.md``); ``invert=True`` flips it for data that differ.
Problems raise :class:`~mwr_dask.noise.schemes.TiltSchemeError` with one sentence naming the
file (and the line where it applies).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from mwr_dask.noise.inputs import read_regular
from mwr_dask.noise.schemes import (
    EXCLUDED_ABSENT,
    EXCLUDED_BY_USER,
    EXCLUDED_DARK,
    EXCLUDED_USETILT,
    TiltScheme,
    TiltSchemeError,
    View,
    parse_exclude,
    views_problem,
)

#: Largest tilt file or dataset list read, bytes: an mdoc of 10,000 views takes about 10 MB.
TEXT_BYTES = 32 * 2**20
#: Sign mapping each format's angles onto the geometry of docs/concepts.md, for the volume
#: orientation the tool writes (see docs/tilt-schemes.md for the derivation):
#: -1 = negated, +1 = used as written.

SIGNS = {
    "imod": -1,  # tilt: t = x cos - z sin in its x-z-y output; trimvol -rx reverses z
    "aretomo": -1,  # t = x cos + z sin; z written reversed, then reversed again by -FlipVol 1
    "serialem": -1,  # stage angles, the numbers IMOD's .rawtlt holds
    "relion5": -1,  # projection Ry(ytilt): t = x cos + z sin in its x-y-z output
    "warp-tomostar": 1,  # projection Euler(0, tilt, psi): t = x cos - z sin, x-y-z output
    "warp-xml": 1,
}

#: Columns of a RELION STAR file that say what else it is (see :func:`star_kind`).
_TOMOGRAM_LIST = ("rlnTomoTiltSeriesStarFile",)
_ISONET = ("rlnTiltMin", "rlnTiltMax", "rlnNumberSubtomo", "rlnMaskBoundary")
_PARTICLES = ("rlnCoordinateX", "rlnCenteredCoordinateXAngst", "rlnTomoParticleName")


@dataclass
class _Read:
    """What a reader found: views in the file's order, and what matches them to another file."""

    views: list[View]
    lines: dict[int, int] = field(default_factory=dict)  # view number -> line of the file
    notes: tuple[str, ...] = ()
    movies: list[str] | None = None  # base name of each view's movie, where the file gives it
    nominal: list[float] | None = None  # stage angle as the microscope wrote it, where given


def _fail(path: Path | str, message: str, line: int | None = None) -> TiltSchemeError:
    where = f", line {line}" if line is not None else ""
    return TiltSchemeError(f"Tilt file {path}{where}: {message}.")


def read_text(path: Path | str, what: str = "Tilt file") -> str:
    """Text of a file as UTF-8, with or without a byte-order mark.

    Only a regular file of at most :data:`TEXT_BYTES` is read (a FIFO or ``/dev/zero`` is
    refused at once, :func:`~mwr_dask.noise.inputs.read_regular`); the readers of the formats
    open the file again only after this.

    Raises
    ------
    TiltSchemeError
        The file cannot be read; the message starts with ``what`` and the path.
    """
    try:
        raw = read_regular(path, TEXT_BYTES)
    except OSError as exc:
        raise TiltSchemeError(f"{what} {path}: cannot be read ({exc.strerror or exc}).") from None
    except ValueError as exc:
        raise TiltSchemeError(f"{what} {path}: {exc}.") from None
    return raw.decode("utf-8-sig", errors="replace")


def as_number(text) -> float | None:
    """``float(text)`` if it is a finite number, else None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
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
    return _rank(doses)


def _movie(name) -> str | None:
    """Return the base name of a movie path as any system wrote it (``C:/f/a.eer``: ``a.eer``)."""
    if not isinstance(name, str) or not name.strip() or name == "None":
        return None
    return re.split(r"[/\\]", name.strip())[-1]


# ------------------------------------------------------------------------------ IMOD .tlt


def _read_tlt(path: Path, text: str) -> _Read:
    rows: list[tuple[int, list[float]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        values = [as_number(t) for t in tokens]
        bad = next((k for k, v in enumerate(values) if v is None), None)
        if bad is not None:
            what = "a tilt angle" if bad == 0 else "a number"
            raise _fail(path, f"{tokens[bad][:40]!r} is not {what}", lineno)
        if rows and len(values) != len(rows[0][1]):
            raise _fail(
                path,
                f"has {len(values)} number{'s' * (len(values) != 1)} here and"
                f" {len(rows[0][1])} on line {rows[0][0]}: a .tlt line is one angle, followed"
                " by the same columns on every line",
                lineno,
            )
        rows.append((lineno, values))  # type: ignore[arg-type]
    if not rows:
        raise _fail(path, "holds no tilt angles")
    columns = [list(c) for c in zip(*(v[1:] for _, v in rows), strict=True)]
    doses, orders, notes = _extra_columns(path, columns, len(rows))
    views = [
        View(number=i + 1, angle=v[0], order=orders[i], dose=doses[i])
        for i, (_, v) in enumerate(rows)
    ]
    return _Read(views, {i + 1: lineno for i, (lineno, _) in enumerate(rows)}, notes)


def _permutation(values: list[float]) -> int | None:
    """0 or 1 when ``values`` are the integers 0..n-1 or 1..n in some order, else None."""
    if not all(v == int(v) for v in values):
        return None
    for base in (0, 1):
        if sorted(int(v) for v in values) == list(range(base, base + len(values))):
            return base
    return None


def _extra_columns(path: Path, columns: list[list[float]], n: int):
    """Doses, acquisition orders and notes from the columns after the angle of a .tlt.

    The second column is a view index when it counts the lines (pytom's "angle index"), the
    acquisition order when it is another order of 1..n or 0..n-1 (AreTomo's ``-AngFile``
    second column), otherwise the accumulated dose in e/A^2, as written (TomoBabel cets-imod
    writes "angle dose [order]"). A third column that is an order is the acquisition order.
    Anything else is named in a note and not used.
    """
    doses: list[float | None] = [None] * n
    orders: list[int | None] = [None] * n
    notes: list[str] = []
    for k, values in enumerate(columns, start=2):
        base = _permutation(values)
        if base is not None and values == [float(base + i) for i in range(n)]:
            notes.append(f"column {k} numbers the lines ({base}, {base + 1}, ...): not used")
        elif base is not None and orders[0] is None:
            orders = [int(v) + 1 - base for v in values]
            notes.append(f"column {k} read as the acquisition order")
        elif k == 2 and all(v >= 0 for v in values):
            doses = list(values)
            notes.append(f"column {k} read as the accumulated dose, e/A^2, as written")
        elif k == 2:
            raise _fail(
                path,
                f"column 2 holds {min(values):g}, neither a dose nor an acquisition order:"
                " a .tlt line is one angle followed by optional columns, not several angles",
            )
        else:
            notes.append(f"column {k} not used")
    if doses[0] is not None and orders[0] is None:
        orders = _orders_from_doses(doses)
    return doses, orders, tuple(notes)


# ------------------------------------------------------------------------------ AreTomo .aln


def _read_aln(path: Path, text: str) -> _Read:
    from alnfile.data_model import AlnData  # teamtomo alnfile: the table and DarkFrame lines

    notes: tuple[str, ...] = ()
    try:
        aln = AlnData.from_string(text)
        table = [float(g.tilt) for g in aln.GlobalAlignments]
        dark = [(int(d.section_idx), float(d.angle)) for d in aln.DarkFrames]
    except Exception:  # pydantic: AreTomo 1.x / AreTomo2 1.0 lack header lines alnfile needs
        table, dark = _aln_lines(path, text)
        notes = ("AreTomo 1.x / AreTomo2 1.0 file (no AlphaOffset/BetaOffset lines): TILT read",)
    if not table:
        raise _fail(path, "has no alignment table (no lines after '# SEC ... TILT')")
    total = len(table) + len(dark)
    positions = [p for p, _ in dark]
    if all(0 <= p < total for p in positions) and len(set(positions)) == len(positions):
        # DarkFrame's first number is the view's index in the tilt-sorted series (0-based)
        merged: list[tuple[float, str]] = []
        rows = iter(table)
        dark_at = dict(dark)
        for p in range(total):
            merged.append((dark_at[p], EXCLUDED_DARK) if p in dark_at else (next(rows), ""))
    else:  # inconsistent indices: place dark views by angle
        merged = sorted([(a, "") for a in table] + [(a, EXCLUDED_DARK) for _, a in dark])
    views = [View(number=i + 1, angle=a, excluded=r) for i, (a, r) in enumerate(merged)]
    return _Read(views, notes=notes)


def _aln_lines(path: Path, text: str) -> tuple[list[float], list[tuple[int, float]]]:
    """TILT column and DarkFrame lines of an .aln, each line read with alnfile's row models."""
    from alnfile.data_model.dark_frames import DarkFrameInfo
    from alnfile.data_model.global_alignments import TiltImageAlignmentParameters

    table: list[float] = []
    dark: list[tuple[int, float]] = []
    in_table = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        try:
            if line.startswith("# DarkFrame"):
                d = DarkFrameInfo.from_string(line)
                dark.append((int(d.section_idx), float(d.angle)))
            elif line.startswith("#"):
                in_table = line.startswith("# SEC") or (in_table and not line.startswith("# Loc"))
            elif in_table and line.strip():
                table.append(float(TiltImageAlignmentParameters.from_string(line).tilt))
        except (ValueError, IndexError):
            raise _fail(path, "is not an AreTomo alignment line", lineno) from None
    return table, dark


# ------------------------------------------------------------------------------ SerialEM .mdoc


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


def _mdoc_kind_problem(text: str) -> str | None:
    """Why an mdoc is not that of a tilt series (montage, frame series), or None."""
    if re.search(r"^\s*\[MontSection", text, re.M) or re.search(r"^\s*Montage\s*=\s*1", text, re.M):
        return (
            "is the mdoc of a montage (its [ZValue] sections are the pieces of montaged"
            " images), not of a tilt series: give the tilt series' .mdoc, one [ZValue] section"
            " per view"
        )
    if re.search(r"^\s*\[FrameSet", text, re.M):
        return (
            "is the mdoc of one movie's frames ([FrameSet] sections, written beside the"
            " frames), not of a tilt series: give the tilt series' .mdoc, one [ZValue] section"
            " per view"
        )
    return None


def _read_mdoc(path: Path, text: str) -> _Read:
    import logging

    from mdocfile.data_models import Mdoc  # teamtomo mdocfile

    problem = _mdoc_kind_problem(text)
    if problem is not None:
        raise _fail(path, problem)
    lines = text.splitlines()
    sections = {}  # ZValue -> line of its [ZValue = n]
    for lineno, line in enumerate(lines, start=1):
        m = re.match(r"\s*\[ZValue\s*=\s*(-?\d+)\s*\]", line)
        if m:
            if int(m.group(1)) in sections:
                raise _fail(path, f"has two sections [ZValue = {m.group(1)}]", lineno)
            sections[int(m.group(1))] = lineno
    if not sections:
        raise _fail(path, "has no [ZValue = n] sections")
    logger = logging.getLogger("mdocfile")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it warns about every field it does not model
    try:
        df = Mdoc.from_string(text).to_dataframe()
    except Exception as exc:
        empty = next(
            (
                (i, m.group(1))
                for i, s in enumerate(lines, 1)
                if (m := re.match(r"\s*(\w+)\s*=\s*$", s))
            ),
            None,
        )
        if empty is not None:
            raise _fail(path, f"{empty[1]} has no value", empty[0]) from None
        raise _fail(path, f"is not a readable SerialEM mdoc file ({_first_line(exc)})") from None
    finally:
        logger.setLevel(level)
    if "TiltAngle" not in df.columns:
        raise _fail(path, "has no TiltAngle in its [ZValue] sections", min(sections.values()))
    df = df[df["ZValue"].notna()].sort_values("ZValue", kind="stable").reset_index(drop=True)
    zvalues = [int(z) for z in df["ZValue"]]
    n = len(df)
    view_lines = {i + 1: sections[z] for i, z in enumerate(zvalues) if z in sections}
    angles: list[float] = []
    for i in range(n):
        value = df["TiltAngle"].iloc[i]
        if value is None or not math.isfinite(float(value)):
            raise _fail(path, "section has no TiltAngle", view_lines.get(i + 1))
        angles.append(float(value))
    times = [_parse_datetime(t) for t in df["DateTime"]] if "DateTime" in df.columns else []
    prior = [as_number(str(p)) for p in df.get("PriorRecordDose", [])]
    if times and all(t is not None for t in times):
        orders = _rank([(t, z) for t, z in zip(times, zvalues, strict=True)])
    elif prior and all(p is not None for p in prior):  # SerialEM's dose before the view
        orders = _rank([(p, z) for p, z in zip(prior, zvalues, strict=True)])
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
    movies = [_movie(p) for p in df["SubFramePath"]] if "SubFramePath" in df.columns else None
    return _Read(views, view_lines, movies=movies, nominal=angles)


# ------------------------------------------------------------------------------ STAR files


def star_blocks(path: Path | str, what: str = "Tilt file") -> dict:
    """Every data block of a STAR file as teamtomo ``starfile`` reads it.

    Raises
    ------
    TiltSchemeError
        The file cannot be read or parsed; the message starts with ``what`` and the path.
    """
    import starfile  # teamtomo starfile

    read_text(path, what)  # unreadable: one sentence
    try:
        return starfile.read(path, always_dict=True)
    except Exception as exc:
        raise TiltSchemeError(
            f"{what} {path}: is not a readable STAR file ({_first_line(exc)})."
        ) from None


def column(block, name: str) -> list | None:
    """Values of column ``name`` of a STAR loop, or None when it has no such column."""
    columns = getattr(block, "columns", None)
    if columns is None or name not in columns:
        return None
    return list(block[name])


def star_kind(blocks: dict) -> str:
    """Return what a STAR file holds, from its columns.

    ``tilt-series list`` (RELION's tomograms.star and tilt_series.star), ``isonet`` (IsoNet's
    tomograms.star), ``particles``, or ``views`` (anything else).
    """
    for names, kind in (
        (_TOMOGRAM_LIST, "tilt-series list"),
        (_ISONET, "isonet"),
        (_PARTICLES, "particles"),
    ):
        if any(column(b, name) is not None for b in blocks.values() for name in names):
            return kind
    return "views"


def _floats(path: Path, values: list, what: str) -> list[float]:
    out = []
    for row, value in enumerate(values, start=1):
        number = as_number(str(value))
        if number is None:
            raise _fail(path, f"{what} of row {row} is {repr(value)[:40]}, not a number")
        out.append(number)
    return out


_NOT_VIEWS = {
    "tilt-series list": "lists tilt series (_rlnTomoTiltSeriesStarFile), not the views of one:"
    " give it to --tomograms, or give --tilt-file one of the files it lists",
    "isonet": "is an IsoNet tomograms.star (one row per tomogram), not the views of one tilt"
    " series: give it to --tomograms",
    "particles": "is a STAR file of particles, not of the views of a tilt series",
}


def _read_relion(path: Path, blocks: dict) -> _Read:
    kind = star_kind(blocks)
    if kind != "views":
        raise _fail(path, _NOT_VIEWS[kind])
    found = [
        b
        for b in blocks.values()
        if column(b, "rlnTomoYTilt") is not None
        or column(b, "rlnTomoNominalStageTiltAngle") is not None
    ]
    if len(found) != 1:
        raise _fail(
            path,
            f"has {len(found)} blocks of tilt angles (_rlnTomoYTilt or"
            " _rlnTomoNominalStageTiltAngle), 1 expected",
        )
    block = found[0]
    refined = column(block, "rlnTomoYTilt") is not None
    name = "rlnTomoYTilt" if refined else "rlnTomoNominalStageTiltAngle"
    angles = _floats(path, column(block, name), f"_{name}")
    nominal = column(block, "rlnTomoNominalStageTiltAngle")
    note = (
        "angles from _rlnTomoYTilt (refined by AlignTiltSeries)"
        if refined
        else "angles from _rlnTomoNominalStageTiltAngle (nominal: a file from before"
        " AlignTiltSeries; the tomogram was made from the refined angles of a later job)"
    )
    return _Read(
        _dosed_views(path, angles, block, "rlnMicrographPreExposure"),
        notes=(note,),
        movies=_movies(column(block, "rlnMicrographMovieName")),
        nominal=None if nominal is None else _floats(path, nominal, "_" + name),
    )


def _movies(names: list | None) -> list[str | None] | None:
    return [_movie(x) for x in names] if names is not None else None


def _dosed_views(path: Path, angles, block, dose_name: str) -> list[View]:
    """Return the views of a STAR loop: angles in file order, doses and their order if given."""
    values = column(block, dose_name)
    doses: list[float | None] = (
        list(_floats(path, values, f"_{dose_name}")) if values else [None] * len(angles)
    )
    orders = _orders_from_doses(doses)
    return [
        View(number=i + 1, angle=a, order=orders[i], dose=doses[i]) for i, a in enumerate(angles)
    ]


def _read_tomostar(path: Path, blocks: dict) -> _Read:
    found = [b for b in blocks.values() if column(b, "wrpAngleTilt") is not None]
    if len(found) != 1:
        raise _fail(path, f"has {len(found)} loops with _wrpAngleTilt, 1 expected")
    block = found[0]
    angles = _floats(path, column(block, "wrpAngleTilt"), "_wrpAngleTilt")
    views = _dosed_views(path, angles, block, "wrpDose")
    return _Read(views, movies=_movies(column(block, "wrpMovieName")))


# ------------------------------------------------------------------------------ Warp .xml


def _xml_list(root, tag: str) -> list[str] | None:
    node = root.find(tag)
    if node is None or node.text is None:
        return None
    return node.text.split()


def _read_warp_xml(path: Path, text: str) -> _Read:
    try:
        root = ET.fromstring(text)
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
        View(i + 1, a, orders[i], doses[i], "" if used[i] else EXCLUDED_USETILT)
        for i, a in enumerate(angles)
    ]
    notes: tuple[str, ...] = ()
    if dose_text is not None and len(dose_text) != len(angles):
        notes = (f"{len(dose_text)} <Dose> entries for {len(angles)} <Angles>: no dose read",)
    if root.get("AreAnglesInverted", "False").strip().lower() == "true":
        notes += (
            "AreAnglesInverted=True (Warp's defocus handedness; it does not change the"
            " geometry of Warp's reconstruction, so the angles are not inverted for it)",
        )
    level = {k: root.get(k) for k in ("LevelAngleX", "LevelAngleY") if as_number(root.get(k, "0"))}
    if level:
        notes += (
            f"{' '.join(f'{k}={v}' for k, v in level.items())} (WarpTools ts_autolevel): Warp"
            " rotates its reconstruction by these angles, which tilts its wedge; not modelled",
        )
    paths = _xml_list(root, "MoviePath")
    return _Read(views, notes=notes, movies=_movies(paths))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def detect_format(path: Path | str, text: str) -> str:
    """Format of a tilt file, from its extension and content (one of :data:`SIGNS`).

    Raises
    ------
    TiltSchemeError
        When neither the extension nor the content is one of the formats.
    """
    suffix = Path(path).suffix.lower()
    head = text.lstrip("\ufeff \t\r\n")[:4096]
    by_suffix = {
        ".tlt": "imod",
        ".rawtlt": "imod",
        ".aln": "aretomo",
        ".mdoc": "serialem",
        ".tomostar": "warp-tomostar",
        ".xml": "warp-xml",
    }
    if suffix in by_suffix:
        return by_suffix[suffix]
    if suffix == ".star":
        return "warp-tomostar" if "_wrpAngleTilt" in text else "relion5"
    # unknown extension: the content decides
    if "[ZValue" in text or "[FrameSet" in text:
        return "serialem"
    if head.startswith("# AreTomo") or re.search(r"^# SEC\s", text, re.MULTILINE):
        return "aretomo"
    if "_wrpAngleTilt" in text:
        return "warp-tomostar"
    if "_rln" in text:
        return "relion5"
    if head.startswith("<") and "<Angles>" in text:
        return "warp-xml"
    tokens = text.replace(",", " ").split()
    if tokens and all(as_number(t) is not None for t in tokens):
        return "imod"
    raise _fail(
        path,
        "is not a tilt file mwr-dask knows (.tlt/.rawtlt, .aln, .mdoc, RELION 5 .star,"
        " .tomostar, Warp .xml)",
    )


def _read_any(path: Path) -> tuple[str, _Read]:
    """Format and views of a tilt file, in the file's own convention."""
    text = read_text(path)
    fmt = detect_format(path, text)
    if fmt in ("relion5", "warp-tomostar"):
        return fmt, (_read_relion if fmt == "relion5" else _read_tomostar)(path, star_blocks(path))
    text_readers = {"imod": _read_tlt, "aretomo": _read_aln, "serialem": _read_mdoc}
    return fmt, text_readers.get(fmt, _read_warp_xml)(path, text)


def read_tilt_file(
    path: Path | str,
    exclude: str | None = None,
    invert: bool = False,
    all_views: Path | str | None = None,
) -> TiltScheme:
    """Read the tilt scheme of one tilt series.

    Parameters
    ----------
    path : path-like
        Tilt file; its format is recognised from the extension and the content.
    exclude : str, optional
        IMOD-style list of 1-based view numbers to leave out, e.g. ``"1-3,40"``
        (:func:`~mwr_dask.noise.schemes.parse_exclude`), counted in the file's order (mdoc:
        ZValue order; with ``all_views``, that file's order).
    invert : bool
        Flip the format's sign convention (``--invert-tilts``) for data whose tomogram has the
        wedge on the other side.
    all_views : path-like, optional
        For a RELION 5 or Warp ``.tomostar`` file, whose dropped views are absent: the file that
        lists every view of the series (its SerialEM ``.mdoc``, or RELION's Import tilt-series
        star). Its views that ``path`` lacks are kept as excluded (``absent from the file``);
        views are matched by movie name, else by nominal stage angle (0.01 degrees).

    Returns
    -------
    TiltScheme

    Raises
    ------
    TiltSchemeError
        Unreadable or unknown file, fewer than 2 views left, an angle outside (-90, 90), a
        repeated angle, an excluded view number out of range, a bad exclude list, an
        ``all_views`` file of another series.
    """
    path = Path(path)
    fmt, read = _read_any(path)
    if all_views is not None:
        read = _with_absent_views(path, fmt, read, Path(all_views))
    views = read.views
    if exclude is not None:
        try:
            drop = set(parse_exclude(exclude, len(views)))
        except ValueError as exc:
            raise _fail(path, str(exc)) from None
        views = [
            replace(v, excluded=EXCLUDED_BY_USER) if v.number in drop and not v.excluded else v
            for v in views
        ]
    found = views_problem(views)
    if found is not None:
        message, view = found
        raise _fail(path, message, None if view is None else read.lines.get(view.number))
    sign = SIGNS[fmt] * (-1 if invert else 1)
    return TiltScheme(
        views=tuple(views),
        source=str(path),
        format=fmt,
        sign=sign,
        inverted=invert,
        notes=read.notes,
    )


def _with_absent_views(path: Path, fmt: str, read: _Read, full_path: Path) -> _Read:
    """Return the views of ``full_path`` in its order, those ``path`` lacks excluded (absent)."""
    if fmt not in ("relion5", "warp-tomostar"):
        raise _fail(
            path,
            "lists its excluded views itself: --all-views applies to RELION 5"
            " and Warp .tomostar files, which drop them",
        )
    full_fmt, full = _read_any(full_path)
    by_name = read.movies is not None and full.movies is not None
    by_name = by_name and None not in read.movies + full.movies  # type: ignore[operator]
    if by_name:
        index = {name: i for i, name in enumerate(full.movies)}  # type: ignore[arg-type]
        found = [index.get(name) for name in read.movies]  # type: ignore[union-attr]
    elif read.nominal is not None and full.nominal is not None:
        found = [_nearest(full.nominal, a) for a in read.nominal]
    else:
        raise _fail(path, f"and {full_path} name no movies or nominal angles to match views by")
    if None in found or len(set(found)) != len(found):
        k = found.index(None) if None in found else len(found) - 1
        raise _fail(
            path,
            f"view {k + 1} is not one of the views of {full_path}, or matches two"
            " of them: not the same tilt series",
        )
    mine = dict(zip(found, read.views, strict=True))
    flip = SIGNS[full_fmt] * SIGNS[fmt]  # the full file's angles in this file's convention
    views = [
        replace(mine[i], number=i + 1)
        if i in mine
        else View(i + 1, flip * v.angle + 0.0, v.order, v.dose, EXCLUDED_ABSENT)
        for i, v in enumerate(full.views)
    ]
    lines = {i + 1: read.lines[mine[i].number] for i in mine if mine[i].number in read.lines}
    note = "views numbered as in the file of every view (--all-views)"
    return _Read(views, lines, (*read.notes, note))


def _nearest(angles: list[float], a: float) -> int | None:
    """Index of the one angle within 0.01 degrees of ``a``, else None."""
    near = [i for i, b in enumerate(angles) if abs(b - a) <= 0.01]
    return near[0] if len(near) == 1 else None
