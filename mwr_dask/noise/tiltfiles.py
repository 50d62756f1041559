"""Tilt files as the field writes them, read into :class:`~mwr_dask.noise.schemes.TiltScheme`.

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

Each format's angles are mapped onto the geometry of ``docs/concepts.md`` with the sign of
:data:`SIGNS` (see ``docs/tilt-schemes.md``); ``invert=True`` flips it for data that differ.
Problems raise :class:`~mwr_dask.noise.schemes.TiltSchemeError` with one sentence naming the
file (and the line where it applies).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from mwr_dask.noise.schemes import (
    EXCLUDED_BY_USER,
    EXCLUDED_DARK,
    EXCLUDED_USETILT,
    TiltScheme,
    TiltSchemeError,
    View,
    parse_exclude,
    views_problem,
)

#: Sign mapping each format's angles onto the geometry of docs/concepts.md, for the volume
#: orientation the tool writes by default (see docs/tilt-schemes.md for the derivation):
#: -1 = negated, +1 = used as written.
SIGNS = {
    "imod": -1,  # tilt: t = x cos - z sin in its x-z-y output; trimvol -rx reverses z
    "aretomo": 1,  # t = x cos + z sin in its x-z-y output; -FlipVol 1 reverses z
    "serialem": -1,  # stage angles, the numbers IMOD's .rawtlt holds
    "relion5": -1,  # projection Ry(ytilt): t = x cos + z sin in its x-y-z output
    "warp-tomostar": 1,  # projection Euler(0, tilt, psi): t = x cos - z sin, x-y-z output
    "warp-xml": 1,
}


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
    prior = [_number(str(p)) for p in df.get("PriorRecordDose", [])]
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
    if dose_text is not None and len(dose_text) != len(angles):
        notes = (f"{len(dose_text)} <Dose> entries for {len(angles)} <Angles>: no dose read",)
    if root.get("AreAnglesInverted", "False").strip().lower() == "true":
        notes += (
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
        ``"1-3,40"`` (:func:`~mwr_dask.noise.schemes.parse_exclude`).
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
            drop = set(parse_exclude(exclude, len(views)))
        except ValueError as exc:
            raise _fail(path, str(exc)) from None
        views = [
            View(v.number, v.angle, v.order, v.dose, EXCLUDED_BY_USER)
            if v.number in drop and not v.excluded
            else v
            for v in views
        ]
    found = views_problem(views)
    if found is not None:
        message, view = found
        raise _fail(path, message, None if view is None else lines.get(view.number))
    sign = SIGNS[fmt] * (-1 if invert else 1)
    return TiltScheme(
        views=tuple(views), source=str(path), format=fmt, sign=sign, inverted=invert, notes=notes
    )
