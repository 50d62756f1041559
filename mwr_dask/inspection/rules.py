"""The folder rules of ``inspect``: small named functions from plain records to findings.

Each rule maps the :class:`Facts` of a folder to a :class:`Found` (problems: exit status 1,
warnings, JSON numbers); rules read no file and start no Dask, so each is tested on records
made by hand. Adding one: ``def my_rule(facts: Facts) -> Found`` and ``Rule(my_rule)`` in
:data:`RULES` (``needs_volumes=False`` if it speaks of a folder without volumes).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from mwr_dask.files.folder import conflicts
from mwr_dask.inspection.duplicates import identical_groups, near_duplicates
from mwr_dask.inspection.reading import SAMPLE_VOXELS
from mwr_dask.inspection.records import FileRecord, FolderReport, is_cube, scheme_key
from mwr_dask.inspection.spectrum import (
    MAX_TILT_GAP_PIXELS,
    MIN_WEDGE_PIXELS,
    TILT_SLACK_DEG,
    SpectrumAnalysis,
    analyse,
    band_radii,
    edge_offsets,
    expected_tilt_edges,
    tilt_gap_pixels,
    wedge_width_pixels,
)
from mwr_dask.inspection.words import LIST_NAMES, names_list, plural, shape_text
from mwr_dask.noise.source import MODES, NoiseSource, parse_labels, source_from_labels

#: Largest wedge ratio of a wedge filter (mode 2 has none: float32 rounding gives ~1e-14).
MODE2_MAX_RATIO = 1e-3
#: Largest |log-log slope| of a flat spectrum (mode 2).
MODE2_MAX_SLOPE = 0.3
#: Back-projection (mode 1) falls like |k|^-1 times the interpolation's roll-off.
MODE1_MAX_SLOPE = -0.5
#: IsoNet regenerates a noise folder that holds fewer entries than this.
ISONET_MIN_ENTRIES = 1000
#: Fewest volumes of one tilt scheme of a mixture whose own averaged spectrum is compared
#: with its range (fewer: a warning, the range is not compared).
MIN_SCHEME_VOLUMES = 20
#: Broken files named one by one before "and N more".
LIST_BROKEN = 5 * LIST_NAMES


@dataclass
class Found:
    """What one rule found: problems, warnings, and numbers for the JSON report."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@dataclass
class Facts:
    """A folder as the rules see it: records, other entries, spectra, and what follows.

    ``spectra``: {cube side: [summed slice spectra, count]}, ``scheme_spectra`` the same keyed
    (cube side, scheme label); ``kinds``: {name: ``a FIFO``, ...} of entries neither files nor
    folders; ``inputs``: a measured spectrum or tilt scheme to compare with.
    """

    folder: Path
    records: list[FileRecord]
    others: list[str] = field(default_factory=list)
    spectra: dict = field(default_factory=dict)
    scheme_spectra: dict = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    correlate: Callable[[str, str], float | None] | None = None
    inputs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.records = sorted(self.records, key=lambda r: (r.index, r.name))

    @cached_property
    def recorded(self) -> list[NoiseSource | None]:
        """The parameters each record's labels give (None without mwr-dask labels)."""
        return [source_from_labels(r.labels) for r in self.records]

    @cached_property
    def label_counts(self) -> Counter:
        """How many volumes record each parameter set."""
        return Counter(p for p in self.recorded if p is not None)

    @cached_property
    def mixture(self) -> str:
        """``K:digest`` of the tilt-file mixture every labelled volume records, else ''."""
        found = {
            parse_labels(r.labels).get("schemes", "")
            for r, p in zip(self.records, self.recorded, strict=True)
            if p is not None
        }
        return found.pop() if len(found) == 1 else ""

    @cached_property
    def mixed(self) -> bool:
        """True for a tilt-file mixture whose schemes record different tilt ranges."""
        return bool(self.mixture) and len(self.label_counts) > 1

    @cached_property
    def scheme_groups(self) -> list[tuple[str, NoiseSource, int]]:
        """(scheme label, the parameters its volumes record, their number), by scheme number."""
        groups: dict[str, Counter] = {}
        for r, p in zip(self.records, self.recorded, strict=True):
            key = scheme_key(r.labels)
            if p is not None and key is not None:
                groups.setdefault(key, Counter())[p] += 1
        return sorted(
            ((key, c.most_common(1)[0][0], c.total()) for key, c in groups.items()),
            key=lambda g: (_scheme_number(g[0]), g[0]),
        )

    @cached_property
    def expected(self) -> NoiseSource | None:
        """The parameters most volumes record, or None.

        A mixture: the commonest scheme's, with the union of the ranges (what the averaged
        spectrum measures) on their finest mean step.
        """
        if not self.label_counts:
            return None
        top = self.label_counts.most_common(1)[0][0]
        if not self.mixture or len(self.label_counts) == 1:
            return top
        lo = min(p.minangle for p in self.label_counts)
        hi = max(p.maxangle for p in self.label_counts)
        step = min(p.anglestep for p in self.label_counts)
        step = (hi - lo) / max(1, round((hi - lo) / step))
        return replace(top, minangle=lo, maxangle=hi, anglestep=step)

    @cached_property
    def readable(self) -> list[FileRecord]:
        """Records whose data could be read."""
        return [r for r in self.records if r.error is None]

    @cached_property
    def cube(self) -> tuple[int, ...] | None:
        """The shape every volume should have: the labels' cube, else the commonest shape."""
        if self.expected is not None:
            return (self.expected.cubesize,) * 3
        shapes = Counter(r.shape for r in self.readable)
        return shapes.most_common(1)[0][0] if shapes else None

    @cached_property
    def broken(self) -> dict[str, str]:
        """{name: reasons} of the files unfit for training (see :func:`file_reasons`)."""
        pairs = zip(self.records, self.recorded, strict=True)
        return {r.name: "; ".join(w) for r, p in pairs if (w := file_reasons(r, p, self.cube))}

    @cached_property
    def good(self) -> list[FileRecord]:
        """Records of the files that are not broken."""
        return [r for r in self.records if r.name not in self.broken]

    @cached_property
    def spectrum(self) -> SpectrumAnalysis | None:
        """The analysis of the averaged spectrum of the main cube size (None without one)."""
        cube = self.cube
        if cube is None or not is_cube(cube) or self.spectra.get(cube[0], [0, 0])[1] <= 0:
            return None
        return analyse_as(*self.spectra[cube[0]], cube[0], self.expected)


def analyse_as(total, count: int, n: int, labels: NoiseSource | None) -> SpectrumAnalysis:
    """Analyse summed spectra; a filtered or dose-weighted folder's with that divided out."""
    if labels is not None and labels.dose_weighting != "none":  # judged as its unweighted mode
        from mwr_dask.inspection.dose import without_dose

        total = without_dose(total, n, labels)
    if labels is not None and labels.mode == 1 and labels.filter != "none":
        from mwr_dask.inspection.filtered import analyse_filtered
        from mwr_dask.noise.source import tilts_of

        return analyse_filtered(total, n, count, labels.filter_spec, tilts_of(labels))
    return analyse(total, n, count)


def _scheme_number(key: str) -> int:
    """``j`` of a ``scheme=j/K ...`` label (0 when unreadable)."""
    number = key.split()[0].partition("=")[2].partition("/")[0]
    return int(number) if number.isdigit() else 0


def same_float(a: float, b: float) -> bool:
    """Equal up to float32 rounding of a header."""
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def index_gaps(indices: list[int]) -> list[tuple[int, int]]:
    """Missing runs ``(first, last)`` between the smallest and largest of ``indices``."""
    ordered = sorted(set(indices))
    return [(a + 1, b - 1) for a, b in itertools.pairwise(ordered) if b > a + 1]


def pooled_moments(records: Iterable[FileRecord]) -> tuple[float, float]:
    """Mean and standard deviation over all voxels of ``records`` (Chan's parallel formula)."""
    count, mean, m2 = 0, 0.0, 0.0
    for r in records:
        if not r.count:
            continue
        total = count + r.count
        delta = r.mean - mean
        mean += delta * r.count / total
        m2 += r.m2 + delta * delta * count * r.count / total  # inf, never OverflowError
        count = total
    if not count:
        return float("nan"), float("nan")
    return mean, math.sqrt(m2 / count)


def file_reasons(
    r: FileRecord, labels: NoiseSource | None, cube: tuple[int, ...] | None
) -> list[str]:
    """Why one file is unfit for training (empty when it is fine); ``cube``: the folder's shape."""
    if r.error is not None:
        return [r.error]
    checks = (
        (r.shape != cube, lambda: f"shape {shape_text(r.shape)}, not {shape_text(cube)}"),
        (r.dtype != "float32", lambda: f"dtype {r.dtype} (MRC mode {r.mrc_mode}), not float32"),
        (r.nonfinite > 0, lambda: plural(r.nonfinite, "NaN or infinite value")),
        (r.nonfinite == 0 and r.m2 == 0, lambda: "constant data"),
        (bool(r.invalid), lambda: f"fails mrcfile.validate: {r.invalid[0]}"),
    )
    reasons = [text() for bad, text in checks if bad]
    return reasons if labels is None else reasons + _label_reasons(r, labels)


def _label_reasons(r: FileRecord, labels: NoiseSource) -> list[str]:
    """Where a file's own labels disagree with its data, name and header."""
    reasons = []
    if labels.cubesize != r.shape[-1] and is_cube(r.shape):
        reasons.append(f"its labels say cube {labels.cubesize}, the data are {r.shape[-1]}^3")
    index = parse_labels(r.labels).get("index", "")
    if index.isdigit() and int(index) != r.index:
        reasons.append(f"its labels say index {index} (a copy?)")
    if r.voxel_size is not None and not same_float(labels.voxel_size, r.voxel_size):
        reasons.append(
            f"its labels say voxel size {labels.voxel_size:g}, the header {r.voxel_size:g}"
        )
    return reasons


# ----------------------------------------------------------------------------- the rules


def other_entries(f: Facts) -> Found:
    """Entries that are not ``n_*.mrc`` volume files: IsoNet opens every entry as a volume."""
    found = Found(summary={"others": f.others})
    if f.others:
        these = plural(len(f.others), "entry is", "entries are")
        what = "an n_*.mrc volume" if len(f.others) == 1 else "n_*.mrc volumes"
        shown = [f"{n} ({f.kinds[n]})" if n in f.kinds else n for n in f.others]
        found.problems.append(
            f"{these} not {what}, and IsoNet opens every entry of the folder as one:"
            f" {names_list(shown)}."
        )
    return found


def no_volumes(f: Facts) -> Found:
    """Find a folder without any ``n_*.mrc`` volume."""
    return Found(problems=[] if f.records else ["the folder holds no n_*.mrc volumes."])


def indices(f: Facts) -> Found:
    """Report the index range and its gaps (a warning: IsoNet needs no particular numbering)."""
    numbers = [r.index for r in f.records]
    gaps = index_gaps(numbers)
    found = Found(
        summary={"index_range": [min(numbers), max(numbers)], "gaps": [list(g) for g in gaps]}
    )
    if gaps:
        missing = sum(b - a + 1 for a, b in gaps)
        shown = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in gaps[:LIST_NAMES])
        more = f" and {len(gaps) - LIST_NAMES} more runs" if len(gaps) > LIST_NAMES else ""
        these = plural(missing, "index is", "indices are")
        found.warnings.append(f"{these} missing between the first and the last: {shown}{more}.")
    return found


def repeated_indices(f: Facts) -> Found:
    """Warn of indices with more than one file (``n_00001.mrc`` and ``n_000001.mrc``)."""
    counts = Counter(r.index for r in f.records)
    repeated = {i for i, c in counts.items() if c > 1}
    if not repeated:
        return Found()
    names = [r.name for r in f.records if r.index in repeated]
    these = plural(len(repeated), "index has", "indices have")
    return Found(warnings=[f"{these} more than one file: {names_list(names)}."])


def enough_entries(f: Facts) -> Found:
    """IsoNet's refine regenerates a noise folder with fewer than 1000 entries."""
    entries = len(f.records) + len(f.others)
    if entries >= ISONET_MIN_ENTRIES:
        return Found()
    return Found(
        warnings=[
            f"{plural(entries, 'entry')}: IsoNet's refine regenerates a noise folder"
            f" with fewer than {ISONET_MIN_ENTRIES}."
        ]
    )


def labels(f: Facts) -> Found:
    """One parameter set, judged by the rules ``generate-noise`` uses to append."""
    expected, counts = f.expected, f.label_counts
    found = Found(
        summary={
            "labels": None if expected is None else expected.as_dict(),
            "labels_agreeing": counts[expected] if expected is not None else 0,
        }
    )
    if expected is None:
        found.warnings.append(
            "no volume carries mwr-dask labels: the spectrum is compared with nothing;"
            " check the estimated tilt range against your tomograms."
        )
        return found
    if f.mixed:
        mixture_labels(f, found)
    else:  # the same rules as appending with generate-noise (mode 2: the step does not matter)
        for other, c in counts.most_common()[1:]:
            differences = conflicts(expected, other)
            if differences:
                found.problems.append(_conflict(c, f"the other {counts[expected]}", differences))
    unlabelled = [r.name for r, p in zip(f.records, f.recorded, strict=True) if p is None]
    if unlabelled:
        these = plural(len(unlabelled), "volume carries", "volumes carry")
        found.problems.append(f"{these} no mwr-dask labels: {names_list(unlabelled)}.")
    return found


def mixture_labels(f: Facts, found: Found) -> None:
    """Labels of a tilt-file mixture: its schemes differ in tilts by design, nothing else may."""
    expected, counts = f.expected, f.label_counts
    same_tilts = {"minangle": expected.minangle, "maxangle": expected.maxangle}
    for other, c in counts.items():
        differences = conflicts(
            expected,
            replace(other, **same_tilts, anglestep=expected.anglestep, doses=expected.doses),
        )
        if differences:
            found.problems.append(_conflict(c, "the rest of the mixture", differences))
    groups = sorted(counts.items(), key=lambda item: (item[0].minangle, item[0].maxangle))
    found.summary["labels_agreeing"] = sum(counts.values())
    found.summary["tilt_schemes"] = {
        "record": f.mixture,
        "groups": [
            {"minangle": p.minangle, "maxangle": p.maxangle, "volumes": c} for p, c in groups
        ],
    }
    ranges = ", ".join(f"{p.minangle:g}..{p.maxangle:g} ({c})" for p, c in groups)
    found.warnings.append(
        f"tilt-file mixture {f.mixture}: {len(groups)} tilt ranges ({ranges}); the averaged"
        " spectrum mixes them, so the tilt range of each scheme's own averaged spectrum is"
        " compared with that scheme's labels instead."
    )


def _conflict(count: int, others: str, differences: list[str]) -> str:
    text = "; ".join(differences).replace("(folder has", "(the others have")
    return f"{plural(count, 'volume records')} other parameters than {others}: {text}."


def shapes(f: Facts) -> Found:
    """Shapes, data types and voxel sizes of the readable volumes, and the expected cube."""
    return Found(
        summary={
            "shapes": {
                shape_text(s): c for s, c in Counter(r.shape for r in f.readable).most_common()
            },
            "dtypes": dict(Counter(r.dtype for r in f.readable).most_common()),
            "voxel_sizes": dict(Counter(r.voxel_size for r in f.readable).most_common()),
            "cube": None if f.cube is None else list(f.cube),
        }
    )


def broken_files(f: Facts) -> Found:
    """Each unreadable, invalid, odd-shaped, non-finite, constant or mislabelled file."""
    broken = f.broken
    found = Found(summary={"broken": broken})
    for name, why in list(broken.items())[:LIST_BROKEN]:
        found.problems.append(f"{name}: {why}.")
    if len(broken) > LIST_BROKEN:
        found.problems.append(f"... and {plural(len(broken) - LIST_BROKEN, 'more broken file')}.")
    return found


def voxel_sizes(f: Facts) -> Found:
    """One voxel size in all headers."""
    sizes = {r.voxel_size for r in f.readable if r.voxel_size is not None}
    if len(sizes) <= 1:
        return Found()
    return Found(problems=[f"the headers give {len(sizes)} voxel sizes: {sorted(sizes)}."])


def moments(f: Facts) -> Found:
    """Mean and standard deviation over the good volumes, and the per-volume spread."""
    mean, std = pooled_moments(f.good)
    stds = [r.std for r in f.good]
    return Found(
        summary={
            "mean": mean,
            "std": std,
            "volume_std_range": [min(stds), max(stds)] if stds else None,
            "good": len(f.good),
        }
    )


def exact_duplicates(f: Facts) -> Found:
    """Volumes with identical data (labels and header excluded)."""
    groups = identical_groups(f.records)
    found = Found(
        summary={
            "duplicates": groups,
            "duplicate_pairs": [list(p) for g in groups for p in itertools.combinations(g, 2)],
        }
    )
    for g in groups:
        pairs = len(g) * (len(g) - 1) // 2
        extra = f" ({pairs} pairs)" if pairs > 1 else ""
        found.problems.append(f"{' = '.join(g)}: identical data{extra}.")
    return found


def near_duplicate_volumes(f: Facts) -> Found:
    """Volumes correlated on their samples, or sharing values shifted (a warning)."""
    near, compared = near_duplicates(f.records, f.correlate)
    found = Found(
        summary={
            "correlation_checked_volumes": compared,
            "near_duplicates": near,
            "sample_voxels": SAMPLE_VOXELS,
        }
    )
    if compared < len([r for r in f.records if r.sample is not None]):
        found.warnings.append(
            f"near-duplicates by correlation were sought among {compared} of the volumes"
            " (shared values among all)."
        )
    for entry in near[:LIST_NAMES]:
        a, b = entry["pair"]
        what = []
        if "sample_correlation" in entry:
            what.append(f"correlation {entry.get('correlation', entry['sample_correlation']):.2f}")
        if "shared_values" in entry:
            what.append(
                f"~{100 * entry['shared_values']:.0f}% of the voxels shared, shifted or not"
            )
        found.warnings.append(f"{a} and {b} are near-duplicates ({', '.join(what)}).")
    if len(near) > LIST_NAMES:
        more = plural(len(near) - LIST_NAMES, "more near-duplicate pair")
        found.warnings.append(f"... and {more}.")
    return found


def spectrum(f: Facts) -> Found:
    """Compare the averaged spectrum with the labels (and against any wedge at all)."""
    sp = f.spectrum
    if sp is None:
        return Found(summary={"spectrum": None})
    info = sp.summary()
    # measured noise (mode 3) has the wedge of its data, not of tilt labels: see spectrum_file
    expected = f.expected if f.expected is None or f.expected.mode != 3 else None
    if not (f.mixed and expected is not None and sp.limit is None):
        found = spectrum_findings(sp, expected, info)
        found.summary = {"spectrum": info}
        return found
    # a tilt-file mixture averages spectra of several ranges (its wedge is partly filled, so
    # mode 2 looks like neither mode): each scheme's own averaged spectrum is compared with its
    # range and mode instead
    found = spectrum_findings(sp, expected, info, compare_tilts=False, check_mode=False)
    entries = []
    for key, params, labelled in f.scheme_groups:
        entry, group = scheme_spectrum(f, key, params, labelled)
        entries.append(entry)
        found.problems.extend(group.problems)
        found.warnings.extend(group.warnings)
    found.summary = {"spectrum": info, "scheme_spectra": entries}
    return found


def scheme_spectrum(f: Facts, key: str, params: NoiseSource, labelled: int) -> tuple[dict, Found]:
    """Compare the averaged spectrum of one scheme's volumes with that scheme's labels.

    ``key``: the label ``scheme=j/K tilts=.. n=.. excl=.. sha=..``. Returns the JSON entry and
    the findings, each starting with the scheme's name.
    """
    number, _, rest = key.partition(" ")
    name = f"scheme {number.partition('=')[2]} (tilts {params.minangle:g}..{params.maxangle:g})"
    n = f.cube[0]
    total, count = f.scheme_spectra.get((n, key), (None, 0))
    entry = {
        "scheme": number.partition("=")[2],
        "label": rest,
        "minangle": params.minangle,
        "maxangle": params.maxangle,
        "labelled": labelled,
        "volumes": count,
        "spectrum": None,
    }
    found = Found()
    if count < MIN_SCHEME_VOLUMES:
        found.warnings.append(
            f"{name}: {plural(count, 'readable volume')}, fewer than the"
            f" {MIN_SCHEME_VOLUMES} a spectral estimate of its own needs; its tilt range and mode"
            " are not compared with the spectrum."
        )
        return entry, found
    sp = analyse_as(total, count, n, params)
    info = sp.summary()
    group = spectrum_findings(sp, params, info)
    entry["spectrum"] = info
    found.problems.extend(f"{name}: {p}" for p in group.problems)
    found.warnings.extend(f"{name}: {w}" for w in group.warnings)
    return entry, found


def spectrum_file(f: Facts) -> Found:
    """Compare the averaged spectrum with a measured spectrum file (``inputs["spectrum"]``).

    Modes 1 and 2 are only compared (a warning); another spectrum, cube or, in mode 3, a
    spectrum beyond the file's statistical error are problems.
    """
    given = f.inputs.get("spectrum")
    if given is None:
        return Found()
    from mwr_dask.inspection.measured import compare_slice_spectra

    found = Found()
    n = given["array"].shape[0]
    e = f.expected
    info: dict = {"name": given["name"], "digest": given["digest"], "cube": n}
    found.summary = {"spectrum_file": info}
    if e is not None and e.mode == 3 and e.spectrum.digest != given["digest"]:
        found.problems.append(
            f"the volumes were made from spectrum {e.spectrum.digest}, not from"
            f" {given['name']} (digest {given['digest']})."
        )
    if f.cube != (n,) * 3 or n not in f.spectra or f.spectra[n][1] <= 0:
        found.problems.append(
            f"{given['name']} is a {n}^3 spectrum; the folder has no readable {n}^3 volumes"
            " to compare with it."
        )
        return found
    total, count = f.spectra[n]
    info.update(compare_slice_spectra(total, count, given["array"]))
    if info["agrees"]:
        return found
    r, phi, ratio = info["worst_bin"]
    text = (
        f"the folder's spectrum differs from {given['name']}'s: power ratio {ratio:.3g} at"
        f" radius {r:.0f}, direction {phi:.1f} deg ({info['worst_sigmas']:.0f} standard"
        f" deviations); log-rms over {info['bins']} bins {info['log_rms']:.2f}."
    )
    if e is not None and e.mode == 3:
        found.problems.append(text)
    else:
        found.warnings.append(text)
    return found


def dose_weighting(f: Facts) -> Found:
    """Compare the power per direction with the labels' dose weighting (:mod:`.dose`)."""
    e = f.expected
    if e is None or e.dose_weighting == "none" or f.spectrum is None or f.spectrum.limit:
        return Found()
    if f.mixed:
        return Found(warnings=["the attenuation per view is not checked in a mixture of schemes."])
    from mwr_dask.inspection.dose import dose_check

    total, count = f.spectra[f.cube[0]]
    return Found(*dose_check(total, f.cube[0], count, e))


# ----------------------------------------------------------------------------- the spectrum


def looks_like(s: SpectrumAnalysis, wedge_visible: bool = True) -> int | None:
    """Return the mode the spectrum looks like: 2 (empty wedge, flat), 1 (falling) or None.

    ``wedge_visible`` False (a wedge too narrow for the grid): the radial fall-off alone decides.
    """
    if s.radial_slope is None or (not s.wedge_found and wedge_visible):
        return None
    empty = not s.wedge_found or s.wedge_ratio is None or s.wedge_ratio <= MODE2_MAX_RATIO
    if empty and abs(s.radial_slope) <= MODE2_MAX_SLOPE:
        return 2
    if s.radial_slope <= MODE1_MAX_SLOPE:
        return 1
    return None


def spectrum_findings(
    s: SpectrumAnalysis,
    expected: NoiseSource | None,
    out: dict | None = None,
    *,
    compare_tilts: bool = True,
    check_mode: bool = True,
) -> Found:
    """Compare the spectrum with the labels, within what the grid can resolve.

    A cube too small, mode 1 tilts beyond :data:`~.spectrum.MAX_TILT_GAP_PIXELS` and wedges
    under :data:`~.spectrum.MIN_WEDGE_PIXELS` give warnings, not problems. ``out`` gets the
    JSON verdicts; tilt-file mixtures skip the tilt (averaged ranges) or mode comparison.
    """
    out = {} if out is None else out
    found = Found()
    if s.limit is not None:
        out["looks_like_mode"] = None
        found.warnings.append(f"{s.limit}.")
        return found
    e, width = expected, math.inf
    if e is not None:
        width = wedge_width_pixels(s.n, e.mode, e.minangle, e.maxangle, e.anglestep)
    mode = looks_like(s, width >= MIN_WEDGE_PIXELS)
    out["looks_like_mode"] = mode
    if not _wedge_findings(s, width, found) or e is None:
        return found
    out["expected_tilt_edges"] = out["tilt_range_agrees"] = None
    if s.wedge_found and e.mode == 1 and tilt_gap_pixels(s.n, e.anglestep) > MAX_TILT_GAP_PIXELS:
        found.warnings.append(
            f"tilts {e.anglestep:g} deg apart are {tilt_gap_pixels(s.n, e.anglestep):.1f}"
            f" Fourier pixels apart at radius {band_radii(s.n)[0]:.1f} of {s.n}^3: the spectrum"
            " shows them as separate lines, not one arc, and its tilt range is not compared"
            " with the labels."
        )
    elif s.wedge_found and compare_tilts:
        _compare_tilts(s, e, out, found)
    if check_mode:
        out["mode_agrees"] = mode == e.mode
        if mode != e.mode:
            seen = "neither mode" if mode is None else f"mode {mode} ({MODES[mode]})"
            ratio = "n/a" if s.wedge_ratio is None else f"{s.wedge_ratio:.2g}"
            slope = "n/a" if s.radial_slope is None else f"{s.radial_slope:.2f}"
            found.problems.append(
                f"the labels say mode {e.mode} ({MODES.get(e.mode, '?')}) but the spectrum"
                f" looks like {seen}: wedge/measured power {ratio}, radial slope {slope}."
            )
    return found


def _wedge_findings(s: SpectrumAnalysis, width: float, found: Found) -> bool:
    """Whether the spectrum's wedge is where a wedge can be (False: nothing more to compare).

    ``width``: the labels' wedge at the band's outer radius, Fourier pixels (inf: no labels).
    """
    n = s.n
    if not s.wedge_found and width < MIN_WEDGE_PIXELS:
        found.warnings.append(
            f"the labels' missing wedge is {width:.1f} Fourier pixels wide at radius"
            f" {band_radii(n)[1]:.1f} of {n}^3, narrower than the grid resolves: no wedge is"
            " expected in the spectrum, and its tilt range is not checked."
        )
    elif not s.wedge_found:
        found.problems.append(
            f"no missing wedge in the kx-kz plane: the power varies by a factor"
            f" {1 / max(s.contrast, 1e-300):.2f} with direction (is the tilt axis y?)."
        )
        return False
    elif s.tilt_range[1] > 90.0 or s.tilt_range[0] < -90.0:
        lo, hi = s.tilt_range
        found.problems.append(
            f"the measured region contains the beam direction kz (tilts {lo:.1f}..{hi:.1f}):"
            " the volumes' axes may be swapped; mwr-dask and IsoNet expect (z, y, x) with"
            " the beam along z."
        )
    return True


def _compare_tilts(s: SpectrumAnalysis, e: NoiseSource, out: dict, found: Found) -> None:
    """Compare the estimated tilt range with the edges the labels ``e`` imply."""
    edges = expected_tilt_edges(e.mode, e.minangle, e.maxangle, e.anglestep)
    tilt_ok = edge_offsets(s.tilt_range, s.tilt_uncertainty, edges)[0]
    out["expected_tilt_edges"] = [list(edges[0]), list(edges[1])]
    out["tilt_range_agrees"] = bool(tilt_ok)
    if not tilt_ok:
        (lo, hi), (u_lo, u_hi) = s.tilt_range, s.tilt_uncertainty
        found.problems.append(
            f"the spectrum's tilt range {lo:.1f}..{hi:.1f} deg disagrees with the labels'"
            f" {e.minangle:g}..{e.maxangle:g} (edges expected within"
            f" {u_lo + TILT_SLACK_DEG:.1f} and {u_hi + TILT_SLACK_DEG:.1f} deg)."
        )


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Rule:
    """A folder rule and whether it only applies to a folder with volumes."""

    check: Callable[[Facts], Found]
    needs_volumes: bool = True


#: The rules, in the order their findings and numbers are reported.
RULES: tuple[Rule, ...] = (
    Rule(other_entries, needs_volumes=False),
    Rule(no_volumes, needs_volumes=False),
    Rule(indices),
    Rule(repeated_indices),
    Rule(enough_entries),
    Rule(labels),
    Rule(shapes),
    Rule(broken_files),
    Rule(voxel_sizes),
    Rule(moments),
    Rule(exact_duplicates),
    Rule(near_duplicate_volumes),
    Rule(spectrum),
    Rule(dose_weighting),
    Rule(spectrum_file),
)


def evaluate(facts: Facts, rules: Iterable[Rule] = RULES) -> FolderReport:
    """Run ``rules`` on ``facts`` and gather their findings into a :class:`FolderReport`."""
    report = FolderReport(
        str(facts.folder), facts.records, facts.others, {"count": len(facts.records)}
    )
    for rule in rules:
        if rule.needs_volumes and not facts.records:
            continue
        found = rule.check(facts)
        report.problems.extend(found.problems)
        report.warnings.extend(found.warnings)
        report.summary.update(found.summary)
    if facts.records:
        report.expected = facts.expected
        report.spectrum = facts.spectrum
    return report
