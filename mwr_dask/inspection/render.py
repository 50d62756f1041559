"""The report of ``inspect`` for people (text) and for scripts (strict JSON)."""

from __future__ import annotations

import json
import math

import numpy as np

from mwr_dask.inspection.duplicates import NEAR_CORRELATION, NEAR_SHARED
from mwr_dask.inspection.reading import SAMPLE_VOXELS
from mwr_dask.inspection.records import FolderReport
from mwr_dask.inspection.words import plural, shape_text
from mwr_dask.noise.source import MODES


def _others(count: int) -> str:
    return {0: "no other entries", 1: "1 other entry"}.get(count, f"{count} other entries")


def _edge_range(edges: tuple[float, float]) -> str:
    lo, hi = edges
    return f"{lo:g}" if lo == hi else f"[{lo:g}, {hi:g}]"


def render_text(report: FolderReport, timing: str | None = None) -> str:
    """Write the report for people: the folder, the spectrum, ``timing``, problems, a verdict."""
    s = report.summary
    lines = [f"Folder      {report.folder}"]
    if s["count"]:
        lines.extend(_folder_lines(report))
    if report.spectrum is not None:
        lines.extend(_spectrum_lines(report))
    if timing:
        lines.append(f"Time        {timing}")
    lines.extend(f"problem: {p}" for p in report.problems)
    lines.extend(f"warning: {w}" for w in report.warnings)
    n_p, n_w = len(report.problems), len(report.warnings)
    if report.ok:
        lines.append(f"OK: {plural(s['count'], 'volume')}, no problems, {plural(n_w, 'warning')}.")
    else:
        lines.append(f"FAILED: {plural(n_p, 'problem')}, {plural(n_w, 'warning')}.")
    return "\n".join(lines)


def _folder_lines(report: FolderReport) -> list[str]:
    s = report.summary
    lo, hi = s["index_range"]
    gaps = sum(b - a + 1 for a, b in s["gaps"])
    lines = [
        f"Volumes     {s['count']} n_*.mrc, indices {lo}..{hi}, "
        + ("no gaps" if not gaps else f"{gaps} missing")
        + f"; {_others(len(report.others))}"
    ]
    shapes = ", ".join(f"{k} ({v})" for k, v in s["shapes"].items()) or "none readable"
    dtypes = ", ".join(f"{k} ({v})" for k, v in s["dtypes"].items())
    voxels = ", ".join(f"{k:g} A ({v})" for k, v in s["voxel_sizes"].items())
    lines.append(f"Cube        {shapes}; {dtypes}; voxel size {voxels}")
    if report.expected is not None:
        agree = s.get("labels_agreeing", 0)
        of = f"{agree} of {plural(s['count'], 'volume')}"
        lines.append(f"Labels      {report.describe_labels()} ({of})")
    else:
        lines.append("Labels      none (not written by mwr-dask)")
    if s["good"]:
        lo_s, hi_s = s["volume_std_range"]
        lines.append(
            f"Data        mean {s['mean']:.4f}, std {s['std']:.4f} over"
            f" {plural(s['good'], 'good volume')}; per-volume std {lo_s:.4f}..{hi_s:.4f}"
        )
    if s["broken"]:
        lines.append(f"Files       {len(s['broken'])} of {s['count']} broken (below)")
    else:
        cube = shape_text(tuple(s["cube"]))
        lines.append(f"Files       all {s['count']} readable, valid, {cube} float32, finite")
    dup, near = len(s["duplicates"]), len(s["near_duplicates"])
    exact = f"{plural(dup, 'group')} of identical volumes" if dup else "no identical data"
    close = plural(near, "near-duplicate pair")
    if not near:
        close = f"no near-duplicates (|r| >= {NEAR_CORRELATION} on {SAMPLE_VOXELS} voxels"
        close += f" or >= {NEAR_SHARED:.0%} of the voxels shared)"
    lines.append(f"Duplicates  {exact} (SHA-256); {close}")
    return lines


def _spectrum_lines(report: FolderReport) -> list[str]:
    sp, e, info = report.spectrum, report.expected, report.summary["spectrum"]
    measured = e is not None and e.mode == 3
    if measured:  # the labels name a measured spectrum, not tilts: compared with its file
        e = None
    lines = [
        f"Spectrum    {plural(sp.volumes, 'volume')} averaged, kx-kz plane, radii"
        f" {sp.band[0]:.1f}..{sp.band[1]:.1f} Fourier pixels"
    ]
    if sp.limit is not None:
        return [*lines, "  not analysed     (below)"]
    est = _estimate(info) if sp.wedge_found else "no wedge found"
    if e is not None and (sp.wedge_found or "tilt_range_agrees" in info):
        est += "  " + _tilt_verdict(info, e.minangle, e.maxangle, e.mode)
    lines.append(f"  tilt range       {est}")
    ratio = "n/a" if sp.wedge_ratio is None else f"{sp.wedge_ratio:.3g}"
    slope = "n/a" if sp.radial_slope is None else f"{sp.radial_slope:+.2f}"
    lines.append(f"  wedge/measured   {ratio}  (mode 2: 0; mode 1: a few %)")
    k0, k1 = sp.slope_radii
    lines.append(
        f"  radial fall-off  |k|^{slope} over shells {k0}..{k1}  (mode 2: flat; mode 1: about"
        " |k|^-1.5)"
    )
    mode = info.get("looks_like_mode")
    seen = "neither mode" if mode is None else f"mode {mode} ({MODES[mode]})"
    schemes = report.summary.get("scheme_spectra")
    if e is not None and schemes is not None:  # a tilt-file mixture: compared per scheme
        seen += f"  labels: mode {e.mode}  compared per scheme"
    elif e is not None:
        seen += f"  labels: mode {e.mode}  {'agrees' if info.get('mode_agrees') else 'DISAGREES'}"
    elif measured:
        seen += "  labels: mode 3 (measured spectrum)"
    lines.append(f"  looks like       {seen}")
    lines.extend(_scheme_lines(schemes or [], e))
    given = report.summary.get("spectrum_file")
    if given and "agrees" in given:
        verdict = "agrees" if given["agrees"] else "DISAGREES"
        lines.append(
            f"  {given['name']:<16} log-rms {given['log_rms']:.3f} over {given['bins']} bins,"
            f" worst {given['worst_sigmas']:.1f} sd  {verdict}"
        )
    return lines


def _estimate(info: dict) -> str:
    """``-60.2 .. 60.1 deg (resolution 0.2, 0.4)`` from a spectrum's JSON numbers."""
    (lo, hi), (u_lo, u_hi) = info["tilt_range"], info["tilt_resolution"]
    return f"{lo:.1f} .. {hi:.1f} deg (resolution {u_lo:.1f}, {u_hi:.1f})"


def _tilt_verdict(info: dict, lo: float, hi: float, mode: int) -> str:
    """Return the labels' range ``lo..hi`` and whether the estimate in ``info`` agrees."""
    text = f"labels {lo:g}..{hi:g}"
    if info.get("tilt_range_agrees") is None:
        unresolved = info["tilt_range"] is None and "tilt_range_agrees" in info
        return text + ("  not resolved (below)" if unresolved else "  not compared (below)")
    if mode == 1:
        lo_r, hi_r = info["expected_tilt_edges"]
        text += f" (edges in {_edge_range(lo_r)} and {_edge_range(hi_r)})"
    return text + ("  agrees" if info["tilt_range_agrees"] else "  DISAGREES")


def _scheme_lines(entries: list[dict], e) -> list[str]:
    """One line per scheme of a tilt-file mixture: its own spectrum's tilt range and verdict."""
    lines = []
    for g in entries:
        head = f"  scheme {g['scheme']:<9} "
        labels = f"labels {g['minangle']:g}..{g['maxangle']:g}"
        info = g["spectrum"]
        if info is None:
            lines.append(f"{head}{plural(g['volumes'], 'volume')}, too few  {labels}  not compared")
            continue
        est = "no wedge found" if info["tilt_range"] is None else _estimate(info)
        labels = _tilt_verdict(info, g["minangle"], g["maxangle"], e.mode)
        if info.get("mode_agrees") is False:
            labels += f"; mode {e.mode} DISAGREES (below)"
        lines.append(f"{head}{est} over {plural(g['volumes'], 'volume')}  {labels}")
    return lines


def json_ready(value):
    """``value`` with numpy types made plain and non-finite floats made None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def render_json(report: FolderReport, **extra) -> str:
    """Write the report as one strict JSON object (NaN and Infinity become null).

    ``extra``: keys added after the report's own (``seconds``, ``worker_threads``, ``plot``).
    """
    return json.dumps(json_ready({**report.to_dict(), **extra}), indent=2, allow_nan=False)
