"""Tilt files written the way the tools write them, all describing one acquisition.

The acquisition: a lamella tilted from its 6-degree pre-tilt, -54 .. 66 degrees every 3 degrees
(41 views), dose-symmetric (6, 9, 3, 12, 0, ...), 3 e/A^2 per view. The three lowest views
(-54, -51, -48; view numbers 1-3 in tilt order) went dark: AreTomo lists them as DarkFrame,
Warp marks them UseTilt False, RELION and the Warp .tomostar drop their rows, IMOD needs
``--exclude 1-3``. Formats follow what the tools print (AreTomo's CSaveAlignFile, SerialEM's
mdoc, RELION 5's tilt-series star, Warp's tomostar and tilt-series xml). Each file holds the
numbers its program writes for this one physical series: the stage angles, except Warp's,
which WarpTools ``ts_import`` negates (``--dont_invert`` keeps them: ``negate=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

PRETILT = 6.0
STEP = 3.0
HALF = 20
DOSE_PER_VIEW = 3.0
DARK = (0, 1, 2)  # 0-based indices in tilt order: views 1-3


@dataclass(frozen=True)
class Shot:
    """One view of the acquisition."""

    angle: float  # degrees, stage tilt as SerialEM records it
    order: int  # 1-based acquisition order
    pre_dose: float  # accumulated dose before the view, e/A^2


def acquisition(pretilt: float = PRETILT, step: float = STEP, half: int = HALF) -> list[Shot]:
    """Views sorted by angle, with a dose-symmetric acquisition order."""
    ks = list(range(-half, half + 1))
    # dose-symmetric: 0, +1, -1, +2, -2, ... (in steps from the pre-tilt)
    acq = sorted(ks, key=lambda k: (abs(k), k < 0))
    order = {k: i + 1 for i, k in enumerate(acq)}
    return [
        Shot(
            angle=round(pretilt + step * k, 2),
            order=order[k],
            pre_dose=DOSE_PER_VIEW * (order[k] - 1),
        )
        for k in ks
    ]


def used_angles(shots: list[Shot], dark=DARK) -> list[float]:
    """Angles of the views left after the dark ones, ascending."""
    return sorted(s.angle for i, s in enumerate(shots) if i not in dark)


def write_tlt(path: Path, angles, *columns) -> Path:
    """IMOD .tlt/.rawtlt: '%7.2f' per angle, one per line, then ``columns`` (e.g. doses)."""
    lines = [f"{a:7.2f}" + "".join(f" {c[i]:g}" for c in columns) for i, a in enumerate(angles)]
    path.write_text("\n".join(lines) + "\n")
    return path


def shuffle_sections(path: Path, seed: int = 0) -> Path:
    """Rewrite an mdoc with its [ZValue] sections in a random order (the header stays first)."""
    import random

    text = path.read_text()
    head, *sections = text.split("[ZValue")
    random.Random(seed).shuffle(sections)
    path.write_text(head + "".join("[ZValue" + s.rstrip("\n") + "\n\n" for s in sections))
    return path


def write_aln(path: Path, shots: list[Shot], dark=DARK, patches: int = 0) -> Path:
    """AreTomo3 .aln: header, one DarkFrame line per dark view, the table without them."""
    lines = [
        "# AreTomo Alignment / Priims bprmMn",
        f"# RawSize = 4096 4096 {len(shots)}",
        f"# NumPatches = {patches}",
    ]
    for i in dark:
        # index in the tilt-sorted series (0-based), section in the raw stack (1-based), tilt
        lines.append(f"# DarkFrame =  {i:4d} {shots[i].order:4d} {shots[i].angle:8.2f}")
    lines += [
        "# AlphaOffset =     0.00",
        "# BetaOffset =     0.00",
        "# Thickness = 1180",
        "# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE"
        "     TILT",
    ]
    rows = [(i, s) for i, s in enumerate(shots) if i not in dark]
    for sec, (_, s) in enumerate(rows):
        tx, ty = 0.37 * sec - 4.1, -0.21 * sec + 2.9
        lines.append(
            f"{sec:5d}  {-84.6312:9.4f}  {1.0:9.5f}  {tx:9.3f}  {ty:9.3f}  {1.0:7.2f}  "
            f"{1.0:7.2f}  {1.0:7.2f}  {0.0:7.2f}  {s.angle:8.2f}"
        )
    if patches:
        lines.append("# Local Alignment")
        for t in range(len(rows)):
            for p in range(patches):
                lines.append(
                    f"{t:4d} {p:3d} {-1200.0 + 600 * p:8.2f}  {400.0:8.2f}  {0.5:8.2f}"
                    f"  {-0.25:8.2f}  {1.0:4.1f}"
                )
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mdoc(path: Path, shots: list[Shot], stack: str = "TS_01.mrc") -> Path:
    """SerialEM tilt-series .mdoc: a header, then [ZValue = n] sections in acquisition order."""
    start = datetime(2024, 3, 14, 15, 43, 7)
    lines = [
        "PixelSpacing = 1.9",
        f"ImageFile = {stack}",
        "ImageSize = 5760 4092",
        "DataMode = 1",
        "",
        "[T = SerialEM: Digitized on EMBL Krios G4                   14-Mar-24  15:42:51    ]",
        "",
        "[T =     Tilt axis angle = -84.7, binning = 1  spot = 7  camera = 0]",
        "",
    ]
    for z, s in enumerate(sorted(shots, key=lambda s: s.order)):
        when = start + timedelta(seconds=47 * z)
        lines += [
            f"[ZValue = {z}]",
            f"TiltAngle = {s.angle:.2f}",
            "StagePosition = 112.841 -301.556",
            "StageZ = -41.3867",
            "Magnification = 64000",
            "Intensity = 0.0940172",
            f"ExposureDose = {DOSE_PER_VIEW}",
            "PixelSpacing = 1.9",
            "SpotSize = 7",
            "Defocus = -3.51",
            "ImageShift = 0.0121 -0.2342",
            "RotationAngle = -84.7",
            "ExposureTime = 2.4",
            "Binning = 1",
            f"MinMaxMean = 0 331 {21.5 - 0.1 * abs(s.angle - PRETILT):.2f}",
            "TargetDefocus = -3.5",
            f"SubFramePath = X:\\frames\\TS_01_{z + 1:03d}_{s.angle:.1f}.eer",
            "NumSubFrames = 320",
            f"DateTime = {when.strftime('%d-%b-%y  %H:%M:%S')}",
            "FilterSlitAndLoss = 10 0",
            "",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_relion_star(
    path: Path, shots: list[Shot], dark=DARK, refined: bool = True, name: str = "TS_01"
) -> Path:
    """RELION 5 tilt-series .star: one loop, rows of the used views, acquisition order.

    ``refined``: with the alignment columns (_rlnTomoXTilt, _rlnTomoYTilt, ...), where YTilt is
    the nominal angle plus a small refinement... here exactly the nominal one, so that every
    format describes the same angles.
    """
    columns = [
        "_rlnMicrographMovieName",
        "_rlnTomoTiltMovieFrameCount",
        "_rlnTomoNominalStageTiltAngle",
        "_rlnTomoNominalTiltAxisAngle",
        "_rlnMicrographPreExposure",
        "_rlnTomoNominalDefocus",
        "_rlnMicrographName",
    ]
    if refined:
        columns += [
            "_rlnTomoXTilt",
            "_rlnTomoYTilt",
            "_rlnTomoZRot",
            "_rlnTomoXShiftAngst",
            "_rlnTomoYShiftAngst",
        ]
    lines = ["", "# version 50001", "", f"data_{name}", "", "loop_"]
    lines += [f"{c} #{i + 1}" for i, c in enumerate(columns)]
    used = [s for i, s in enumerate(shots) if i not in dark]
    for s in sorted(used, key=lambda s: s.order):
        movie = f"frames/{name}_{s.order:03d}_{s.angle:.1f}.eer"
        row = [
            movie,
            "320",
            f"{s.angle:.6f}",
            "-84.700000",
            f"{s.pre_dose:.6f}",
            "-3.500000",
            f"MotionCorr/job002/{movie[:-4]}.mrc",
        ]
        if refined:
            row += ["0.000000", f"{s.angle:.6f}", "-84.631200", "12.300000", "-7.900000"]
        lines.append(" ".join(row))
    path.write_text("\n".join(lines) + "\n\n")
    return path


def write_tomostar(path: Path, shots: list[Shot], dark=DARK, negate: bool = True) -> Path:
    """Warp .tomostar: an unnamed data block, one loop, the used views in acquisition order."""
    sign = -1 if negate else 1
    lines = [
        "",
        "data_",
        "",
        "loop_",
        "_wrpMovieName #1",
        "_wrpAngleTilt #2",
        "_wrpAxisAngle #3",
        "_wrpAxisOffsetX #4",
        "_wrpAxisOffsetY #5",
        "_wrpDose #6",
    ]
    used = [s for i, s in enumerate(shots) if i not in dark]
    for s in sorted(used, key=lambda s: s.order):
        movie = f"../frames/TS_01_{s.order:03d}_{s.angle:.1f}.eer"
        lines.append(f"{movie}  {sign * s.angle + 0:.2f}  -84.7  0  0  {s.pre_dose:.4f}")
    path.write_text("\n".join(lines) + "\n\n")
    return path


def write_warp_xml(
    path: Path, shots: list[Shot], dark=DARK, inverted: bool = False, negate: bool = True
) -> Path:
    """Warp/WarpTools tilt-series .xml: per-view lists in tilt order, UseTilt False if dark."""
    n = len(shots)
    sign = -1 if negate else 1

    def block(tag: str, values) -> str:
        return f"  <{tag}>" + "\n".join(str(v) for v in values) + f"</{tag}>"

    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<TiltSeries DataDirectory="/data/tomostar" '
        f'AreAnglesInverted="{"True" if inverted else "False"}" '
        'PlaneNormal="-0.004, 0.103, 0.995" Bfactor="0" Weight="1" '
        'MagnificationCorrection="1, 0, 0, 1" UnselectFilter="False" CTFResolutionEstimate="6.1">',
        block("Angles", [f"{sign * s.angle + 0:g}" for s in shots]),
        block("Dose", [f"{s.pre_dose:g}" for s in shots]),
        block("UseTilt", ["False" if i in dark else "True" for i in range(n)]),
        block("AxisAngle", ["-84.7"] * n),
        block("AxisOffsetX", ["0"] * n),
        block("AxisOffsetY", ["0"] * n),
        block("MoviePath", [f"../frames/TS_01_{s.order:03d}_{s.angle:.1f}.eer" for s in shots]),
        '  <CTF><Param Name="Voltage" Value="300" /><Param Name="Defocus" Value="3.5" /></CTF>',
        "</TiltSeries>",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
