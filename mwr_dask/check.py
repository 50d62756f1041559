"""Inspect a noise folder: every volume read, checked and summarised, in parallel with Dask.

Two halves:

- per-file work that runs on the workers (:func:`inspect_file`, :func:`inspect_partition`):
  open the file, run mrcfile's validation, hash the data, take its moments, a sample of its
  voxels and a sketch of its values, and add its slice spectrum to the partition's sum; each
  partition sends back small records and one spectrum per cube size, never a volume;
- the reduction (:func:`reduce_folder`): names, shapes, labels, duplicates, moments and the
  spectrum analysis (:mod:`mwr_dask.spectrum`) turned into a :class:`FolderReport` with its
  problems (exit status 1) and warnings.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import math
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np

from mwr_dask.folder import conflicts
from mwr_dask.mrcio import HEADER_BYTES
from mwr_dask.params import MODES, NAME_PATTERN, NoiseParams, params_from_labels
from mwr_dask.spectrum import SpectrumAnalysis, analyse, expected_tilt_edges, slice_power

#: Voxels sampled (same positions in every volume of a shape) for the near-duplicate check.
SAMPLE_VOXELS = 512
#: Volumes whose samples are compared pair by pair (a random choice of them beyond).
NEAR_MAX_VOLUMES = 5000
#: Correlation on the sample above which two volumes are reported as near-duplicates.
NEAR_CORRELATION = 0.5
#: Hashes kept per volume to estimate the fraction of voxels two volumes share (shifted).
SKETCH_SIZE = 64
#: Hashes two sketches must share before their overlap is estimated (chance collisions: 1).
SKETCH_MIN_SHARED = 3
#: Estimated fraction of shared voxels above which two volumes are near-duplicates.
NEAR_SHARED = 0.5
#: Near-duplicate pairs whose correlation is recomputed on the whole volumes.
CONFIRM_PAIRS = 20
#: Slack (degrees) on top of an edge's resolution when comparing tilt ranges with the labels.
TILT_SLACK_DEG = 1.5
#: Largest wedge ratio of a wedge filter (mode 2 has none: float32 rounding gives ~1e-14).
MODE2_MAX_RATIO = 1e-3
#: Largest |log-log slope| of a flat spectrum (mode 2).
MODE2_MAX_SLOPE = 0.3
#: Back-projection (mode 1) falls like |k|^-1 times the interpolation's roll-off.
MODE1_MAX_SLOPE = -0.5
#: IsoNet regenerates a noise folder that holds fewer entries than this.
ISONET_MIN_ENTRIES = 1000
#: Names listed in one line of the text report before "and N more".
LIST_NAMES = 8


# ----------------------------------------------------------------------------- worker side


@functools.lru_cache(maxsize=8)
def sample_positions(size: int, count: int = SAMPLE_VOXELS) -> np.ndarray:
    """Flat indices of the voxels sampled from every volume of ``size`` voxels (fixed, sorted)."""
    if size <= count:
        return np.arange(size)
    return np.sort(np.random.default_rng(20240611).choice(size, count, replace=False))


def value_sketch(data: np.ndarray, k: int = SKETCH_SIZE) -> np.ndarray:
    """Return the ``k`` smallest hashes of the pairs of x-neighbours of ``data`` (MinHash).

    Two volumes cut from one larger volume share the voxel pairs of their overlap, wherever
    the overlap lies; the sketches of two volumes estimate the Jaccard index of their sets of
    pairs. Pairs rather than single values: independent float32 noise volumes of 64^3 share
    about a thousand single values by chance, but practically no pair. The 32-bit hash
    (murmur3's finaliser of a mix of the two values' bits) rarely collides: two independent
    64^3 volumes share one of their 64 hashes with a probability of about 0.4%.
    """
    v = np.ascontiguousarray(data, dtype=np.float32)
    v = v.reshape(-1, v.shape[-1]) if v.ndim >= 1 and v.size and v.shape[-1] >= 2 else None
    if v is None:
        return np.zeros(0, dtype=np.uint32)
    bits = v.view(np.uint32)
    z = bits[:, :-1] * np.uint32(0x9E3779B1)
    z ^= bits[:, 1:]
    z = z.reshape(-1)
    z ^= z >> np.uint32(16)
    z *= np.uint32(0x85EBCA6B)
    z ^= z >> np.uint32(13)
    z *= np.uint32(0xC2B2AE35)
    z ^= z >> np.uint32(16)
    take = min(4 * k, z.size)
    smallest = np.partition(z, take - 1)[:take] if take < z.size else z
    return np.unique(smallest)[:k]


@dataclass
class FileRecord:
    """What one worker learnt about one ``n_*.mrc`` file (small: no volume data).

    Attributes
    ----------
    name : str
        File name.
    index : int
        Index from the name.
    size : int
        Bytes on disk.
    error : str or None
        Why the file could not be read as a volume (one sentence), or None.
    invalid : list of str
        Messages of mrcfile's validation (empty when valid).
    shape : tuple of int or None
        Data shape (z, y, x) from the header.
    dtype : str or None
        Data type of the stored values (numpy name), e.g. ``float32``.
    mrc_mode : int or None
        MRC data mode of the header.
    voxel_size : float or None
        Voxel size (x) of the header, angstroms.
    labels : list of str
        Header labels.
    digest : str or None
        SHA-256 of dtype, shape and data bytes.
    count, mean, m2 : float
        Voxels, mean and sum of squared deviations (finite data only).
    nonfinite : int
        NaN and infinite values.
    sample : numpy.ndarray or None
        Values at :func:`sample_positions`, float32.
    sketch : numpy.ndarray or None
        :func:`value_sketch` of the data.
    """

    name: str
    index: int
    size: int = 0
    error: str | None = None
    invalid: list[str] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    mrc_mode: int | None = None
    voxel_size: float | None = None
    labels: list[str] = field(default_factory=list)
    digest: str | None = None
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    nonfinite: int = 0
    sample: np.ndarray | None = field(default=None, repr=False)
    sketch: np.ndarray | None = field(default=None, repr=False)

    @property
    def std(self) -> float:
        """Standard deviation of the data."""
        return math.sqrt(self.m2 / self.count) if self.count else float("nan")


def _truncation(mrc, size: int) -> str:
    """One sentence on a file whose data block is shorter than the header says."""
    h = mrc.header
    nvox = int(h.nx) * int(h.ny) * int(h.nz)
    try:
        itemsize = mrcfile.utils.dtype_from_mode(h.mode).itemsize
    except ValueError:
        return f"unknown MRC data mode {int(h.mode)}"
    expected = HEADER_BYTES + int(h.nsymbt) + nvox * itemsize
    return f"truncated: {size} of {expected} bytes"


def inspect_file(path: str) -> tuple[FileRecord, np.ndarray | None]:
    """Read and check one volume file.

    Parameters
    ----------
    path : str
        Path of an ``n_*.mrc`` file.

    Returns
    -------
    record : FileRecord
        Everything but the data.
    data : numpy.ndarray or None
        The volume, (z, y, x), when it could be read; None otherwise.
    """
    name = os.path.basename(path)
    match = NAME_PATTERN.match(name)
    rec = FileRecord(name=name, index=int(match.group(1)) if match else -1)
    try:
        rec.size = os.path.getsize(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, permissive=True) as mrc:
                h = mrc.header
                rec.shape = (int(h.nz), int(h.ny), int(h.nx))
                rec.mrc_mode = int(h.mode)
                rec.voxel_size = float(mrc.voxel_size.x)
                nlabl = min(max(int(h.nlabl), 0), 10)
                rec.labels = [lab.decode("ascii", "replace").strip() for lab in h.label[:nlabl]]
                report = io.StringIO()
                if not mrc.validate(print_file=report):
                    rec.invalid = [line for line in report.getvalue().splitlines() if line]
                if mrc.data is None:
                    rec.error = _truncation(mrc, rec.size)
                    return rec, None
                data = np.asarray(mrc.data)
    except (OSError, ValueError) as err:
        rec.error = f"unreadable: {getattr(err, 'strerror', None) or err}"
        return rec, None
    except Exception as err:  # mrcfile on garbage can fail in many ways
        rec.error = f"unreadable: {type(err).__name__}: {err}"
        return rec, None
    rec.shape = tuple(int(s) for s in data.shape)
    rec.dtype = np.dtype(data.dtype).name
    digest = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
    digest.update(np.ascontiguousarray(data).data)
    rec.digest = digest.hexdigest()
    values = np.asarray(data).reshape(-1)
    if not np.issubdtype(values.dtype, np.floating) or values.dtype.itemsize > 4:
        values = values.astype(np.float64)
    finite = np.isfinite(values)
    rec.nonfinite = int(values.size - np.count_nonzero(finite))
    good = values if rec.nonfinite == 0 else values[finite]
    rec.count = int(good.size)
    if good.size:
        rec.mean = float(good.sum(dtype=np.float64)) / good.size
        centred = good - good.dtype.type(rec.mean)
        rec.m2 = float(np.multiply(centred, centred).sum(dtype=np.float64))
    if rec.nonfinite == 0 and values.size:
        rec.sample = values[sample_positions(values.size)].astype(np.float32)
        rec.sketch = value_sketch(values)
    return rec, data


def _is_cube(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 3 and shape[0] == shape[1] == shape[2] > 1


def inspect_partition(paths: list[str]) -> dict:
    """Inspect files on a worker: their records and the sum of their spectra per cube side.

    Returns
    -------
    dict
        ``records``: list of :class:`FileRecord`; ``spectra``: {side: [sum of
        :func:`~mwr_dask.spectrum.slice_power`, count]} over the readable, finite cubes.
    """
    records, spectra = [], {}
    for path in paths:
        rec, data = inspect_file(path)
        records.append(rec)
        if data is not None and _is_cube(rec.shape) and rec.nonfinite == 0 and rec.m2 > 0:
            n = rec.shape[0]
            acc = spectra.setdefault(n, [np.zeros((n, n // 2 + 1)), 0])
            acc[0] += slice_power(data)
            acc[1] += 1
    return {"records": records, "spectra": spectra}


def _partition(chunks: list[list[str]]) -> list[dict]:
    return [inspect_partition([p for chunk in chunks for p in chunk])]


# ----------------------------------------------------------------------------- reduction


@dataclass
class FolderReport:
    """Everything ``mwr-dask inspect`` reports about a folder.

    Attributes
    ----------
    folder : str
        The folder, absolute.
    records : list of FileRecord
        One per ``n_*.mrc`` file, by index.
    others : list of str
        Entries that are not ``n_*.mrc`` volume files.
    summary : dict
        JSON-ready numbers and findings (see :meth:`to_dict`).
    problems : list of str
        Findings that make the folder unfit (exit status 1), one sentence each.
    warnings : list of str
        Findings worth a look that do not fail the folder.
    spectrum : SpectrumAnalysis or None
        Analysis of the averaged spectrum of the main cube size.
    expected : NoiseParams or None
        Parameters the labels of most volumes record.
    """

    folder: str
    records: list[FileRecord]
    others: list[str]
    summary: dict
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    spectrum: SpectrumAnalysis | None = None
    expected: NoiseParams | None = None

    @property
    def ok(self) -> bool:
        """True when nothing is broken, duplicated or inconsistent."""
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-ready report."""
        return {
            "folder": self.folder,
            "ok": self.ok,
            "exit_code": 0 if self.ok else 1,
            **self.summary,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def names_list(names: list[str], limit: int = LIST_NAMES) -> str:
    """Join names as ``a, b, c and 5 more``."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def index_gaps(indices: list[int]) -> list[tuple[int, int]]:
    """Missing runs ``(first, last)`` between the smallest and largest of ``indices``."""
    out = []
    ordered = sorted(set(indices))
    for a, b in itertools.pairwise(ordered):
        if b > a + 1:
            out.append((a + 1, b - 1))
    return out


def pooled_moments(records: list[FileRecord]) -> tuple[float, float]:
    """Mean and standard deviation over all voxels of ``records`` (Chan's parallel formula)."""
    count, mean, m2 = 0, 0.0, 0.0
    for r in records:
        if not r.count:
            continue
        total = count + r.count
        delta = r.mean - mean
        mean += delta * r.count / total
        m2 += r.m2 + delta**2 * count * r.count / total
        count = total
    if not count:
        return float("nan"), float("nan")
    return mean, math.sqrt(m2 / count)


def correlated_pairs(
    records: list[FileRecord],
    threshold: float = NEAR_CORRELATION,
    max_volumes: int = NEAR_MAX_VOLUMES,
) -> tuple[list[tuple[int, int, float]], int]:
    """Pairs (i, j, r) of ``records`` whose voxel samples correlate with |r| >= threshold.

    Every pair of up to ``max_volumes`` volumes is compared (a fixed random choice of that
    many when there are more); an estimate from n sampled voxels has a standard error of
    about 1 / sqrt(n) for independent volumes.

    Returns
    -------
    pairs : list of tuple
        ``(i, j, r)`` with ``i < j`` indices into ``records``.
    compared : int
        Volumes compared.
    """
    rows = [i for i, r in enumerate(records) if r.sample is not None and r.sample.size > 2]
    if len(rows) > max_volumes:
        pick = np.random.default_rng(len(rows)).choice(len(rows), max_volumes, replace=False)
        rows = [rows[i] for i in np.sort(pick)]
    sizes = Counter(records[i].sample.size for i in rows)
    if sizes:
        common = sizes.most_common(1)[0][0]
        rows = [i for i in rows if records[i].sample.size == common]
    if len(rows) < 2:
        return [], len(rows)
    z = np.stack([records[i].sample for i in rows]).astype(np.float32)
    z -= z.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(z, axis=1)
    z /= np.where(norms > 0, norms, 1.0)[:, None]
    out = []
    block = max(1, 2**24 // len(rows))
    for start in range(0, len(rows), block):
        c = z[start : start + block] @ z.T
        ii, jj = np.nonzero(np.abs(c) >= threshold)
        for a, b in zip(ii, jj, strict=True):
            i, j = start + int(a), int(b)
            if i < j:
                out.append((rows[i], rows[j], float(c[a, b])))
    return out, len(rows)


def shared_value_pairs(
    records: list[FileRecord], threshold: float = NEAR_SHARED
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, f) of ``records`` estimated to share a fraction f >= threshold of voxels.

    From the bottom-k sketches (:func:`value_sketch`): the Jaccard index J of the two sets of
    neighbour pairs is estimated by the share of the k smallest hashes of their union found in
    both; f = 2J / (1 + J) is the fraction of each volume found in the other (equal sizes).
    """
    holders = defaultdict(list)
    for i, r in enumerate(records):
        if r.sketch is not None:
            for h in r.sketch.tolist():
                holders[h].append(i)
    common = Counter()
    for owners in holders.values():
        if 1 < len(owners) <= 64:
            for a in range(len(owners)):
                for b in range(a + 1, len(owners)):
                    common[owners[a], owners[b]] += 1
    out = []
    for (i, j), shared in common.items():
        if shared < SKETCH_MIN_SHARED:  # chance collisions of the 32-bit hash
            continue
        si, sj = records[i].sketch, records[j].sketch
        k = min(si.size, sj.size)
        union = np.union1d(si, sj)[:k]
        both = np.intersect1d(np.intersect1d(si, sj), union).size
        jac = both / k
        f = 2 * jac / (1 + jac)
        if f >= threshold:
            out.append((i, j, float(f)))
    return sorted(out)


def full_correlation(a: Path, b: Path) -> float | None:
    """Correlation of the data of two volume files (None if either cannot be read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(a, permissive=True) as ma, mrcfile.open(b, permissive=True) as mb:
                x = np.asarray(ma.data, dtype=np.float64).ravel()
                y = np.asarray(mb.data, dtype=np.float64).ravel()
    except Exception:
        return None
    if x.shape != y.shape or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _same_float(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def reduce_folder(
    folder: Path,
    records: list[FileRecord],
    others: list[str],
    spectra: dict[int, list],
) -> FolderReport:
    """Turn the workers' records and spectra into a :class:`FolderReport`.

    Parameters
    ----------
    folder : pathlib.Path
        The folder inspected.
    records : list of FileRecord
        One per ``n_*.mrc`` file.
    others : list of str
        Entries that are not ``n_*.mrc`` files.
    spectra : dict
        {cube side: [summed slice spectra, count]} over all partitions.
    """
    records = sorted(records, key=lambda r: (r.index, r.name))
    problems: list[str] = []
    notes: list[str] = []
    summary: dict = {"count": len(records)}
    report = FolderReport(str(folder), records, others, summary, problems, notes)

    if others:
        these = (
            "1 entry is not an n_*.mrc volume"
            if len(others) == 1
            else f"{len(others)} entries are not n_*.mrc volumes"
        )
        problems.append(
            f"{these}, and IsoNet opens every entry of the folder as one: {names_list(others)}."
        )
    summary["others"] = others
    if not records:
        problems.append("the folder holds no n_*.mrc volumes.")
        return report

    # names and indices
    indices = [r.index for r in records]
    gaps = index_gaps(indices)
    summary["index_range"] = [min(indices), max(indices)]
    summary["gaps"] = [list(g) for g in gaps]
    missing = sum(b - a + 1 for a, b in gaps)
    if gaps:
        shown = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in gaps[:LIST_NAMES])
        more = f" and {len(gaps) - LIST_NAMES} more runs" if len(gaps) > LIST_NAMES else ""
        these = "1 index is" if missing == 1 else f"{missing} indices are"
        notes.append(f"{these} missing between the first and the last: {shown}{more}.")
    repeated = [i for i, c in Counter(indices).items() if c > 1]
    if repeated:
        names = [r.name for r in records if r.index in set(repeated)]
        notes.append(f"{len(repeated)} indices have more than one file: {names_list(names)}.")
    if len(records) + len(others) < ISONET_MIN_ENTRIES:
        notes.append(
            f"{len(records) + len(others)} entries: IsoNet's refine regenerates a noise folder"
            f" with fewer than {ISONET_MIN_ENTRIES}."
        )

    # labels: the parameters most volumes record
    recorded = [params_from_labels(r.labels) for r in records]
    counts = Counter(p for p in recorded if p is not None)
    expected = counts.most_common(1)[0][0] if counts else None
    report.expected = expected
    summary["labels"] = None if expected is None else expected.as_dict()
    summary["labels_agreeing"] = counts[expected] if expected is not None else 0
    unlabelled = [r.name for r, p in zip(records, recorded, strict=True) if p is None]
    if expected is None:
        notes.append(
            "no volume carries mwr-dask labels: the spectrum is compared with nothing;"
            " check the estimated tilt range against your tomograms."
        )
    else:
        # the same rules as appending with generate-noise (the step does not matter in mode 2)
        for other, c in counts.most_common()[1:]:
            differences = conflicts(expected, other)
            if differences:
                problems.append(
                    ("1 volume records" if c == 1 else f"{c} volumes record")
                    + f" other parameters than the other {counts[expected]}: "
                    + "; ".join(differences).replace("(folder has", "(the others have")
                    + "."
                )
        if unlabelled:
            problems.append(
                f"{len(unlabelled)} volumes carry no mwr-dask labels: {names_list(unlabelled)}."
            )

    # the cube every volume should have
    readable = [r for r in records if r.error is None]
    shapes = Counter(r.shape for r in readable)
    if expected is not None:
        cube = (expected.cubesize,) * 3
    elif shapes:
        cube = shapes.most_common(1)[0][0]
    else:
        cube = None
    summary["shapes"] = {_shape(s): c for s, c in shapes.most_common()}
    summary["dtypes"] = dict(Counter(r.dtype for r in readable).most_common())
    summary["voxel_sizes"] = dict(Counter(r.voxel_size for r in readable).most_common())
    summary["cube"] = None if cube is None else list(cube)

    # per-file problems
    broken: dict[str, str] = {}
    for r, p in zip(records, recorded, strict=True):
        reasons = []
        if r.error is not None:
            reasons.append(r.error)
        else:
            if r.shape != cube:
                reasons.append(f"shape {_shape(r.shape)}, not {_shape(cube)}")
            if r.dtype != "float32":
                reasons.append(f"dtype {r.dtype} (MRC mode {r.mrc_mode}), not float32")
            if r.nonfinite:
                reasons.append(f"{r.nonfinite} NaN or infinite values")
            elif r.m2 == 0:
                reasons.append("constant data")
        if r.invalid and r.error is None:
            reasons.append(f"fails mrcfile.validate: {r.invalid[0]}")
        if p is not None and r.error is None:
            if p.cubesize != r.shape[-1] and _is_cube(r.shape):
                reasons.append(f"its labels say cube {p.cubesize}, the data are {r.shape[-1]}^3")
            index = parse_index(r.labels)
            if index is not None and index != r.index:
                reasons.append(f"its labels say index {index} (a copy?)")
            if r.voxel_size is not None and not _same_float(p.voxel_size, r.voxel_size):
                reasons.append(
                    f"its labels say voxel size {p.voxel_size:g}, the header {r.voxel_size:g}"
                )
        if reasons:
            broken[r.name] = "; ".join(reasons)
    summary["broken"] = broken
    for name, why in list(broken.items())[: 5 * LIST_NAMES]:
        problems.append(f"{name}: {why}.")
    if len(broken) > 5 * LIST_NAMES:
        problems.append(f"... and {len(broken) - 5 * LIST_NAMES} more broken files.")
    sizes = {v for v in summary["voxel_sizes"] if v is not None}
    if len(sizes) > 1:
        problems.append(f"the headers give {len(sizes)} voxel sizes: {sorted(sizes)}.")

    # moments over the good volumes
    good = [r for r in records if r.name not in broken]
    mean, std = pooled_moments(good)
    stds = [r.std for r in good]
    summary["mean"], summary["std"] = mean, std
    summary["volume_std_range"] = [min(stds), max(stds)] if stds else None
    summary["good"] = len(good)

    # duplicates
    by_digest = defaultdict(list)
    for r in records:
        if r.digest is not None:
            by_digest[r.digest].append(r.name)
    groups = [names for names in by_digest.values() if len(names) > 1]
    summary["duplicates"] = groups
    summary["duplicate_pairs"] = [
        [g[a], g[b]] for g in groups for a in range(len(g)) for b in range(a + 1, len(g))
    ]
    for g in groups:
        pairs = len(g) * (len(g) - 1) // 2
        extra = f" ({pairs} pairs)" if pairs > 1 else ""
        problems.append(f"{' = '.join(g)}: identical data{extra}.")
    same = {r.name: r.digest for r in records}
    near = {}
    pairs, compared = correlated_pairs(records)
    summary["correlation_checked_volumes"] = compared
    if compared < len([r for r in records if r.sample is not None]):
        notes.append(
            f"near-duplicates by correlation were sought among {compared} of the volumes"
            " (shared values among all)."
        )
    for i, j, c in pairs:
        a, b = records[i].name, records[j].name
        if same[a] != same[b]:
            near[a, b] = {"pair": [a, b], "sample_correlation": round(c, 4)}
    for i, j, f in shared_value_pairs(records):
        a, b = records[i].name, records[j].name
        if same[a] != same[b]:
            near.setdefault((a, b), {"pair": [a, b]})["shared_values"] = round(f, 3)
    for key in list(near)[:CONFIRM_PAIRS]:
        r = full_correlation(folder / key[0], folder / key[1])
        if r is not None:
            near[key]["correlation"] = round(r, 4)
    summary["near_duplicates"] = list(near.values())
    summary["sample_voxels"] = SAMPLE_VOXELS
    for entry in list(near.values())[:LIST_NAMES]:
        a, b = entry["pair"]
        what = []
        if "sample_correlation" in entry:
            what.append(f"correlation {entry.get('correlation', entry['sample_correlation']):.2f}")
        if "shared_values" in entry:
            what.append(
                f"~{100 * entry['shared_values']:.0f}% of the voxels shared, shifted or not"
            )
        notes.append(f"{a} and {b} are near-duplicates ({', '.join(what)}).")
    if len(near) > LIST_NAMES:
        notes.append(f"... and {len(near) - LIST_NAMES} more near-duplicate pairs.")

    # the spectrum of the main cube size
    if cube is not None and _is_cube(cube) and cube[0] in spectra and spectra[cube[0]][1] > 0:
        total, count = spectra[cube[0]]
        report.spectrum = analyse(total, cube[0], count)
        summary["spectrum"] = report.spectrum.summary()
        summary["spectrum"]["looks_like_mode"] = looks_like(report.spectrum)
        problems.extend(compare_spectrum(report.spectrum, expected, summary["spectrum"]))
    else:
        summary["spectrum"] = None
    return report


def parse_index(labels: list[str]) -> int | None:
    """Return the ``index=`` of mwr-dask labels, or None."""
    for label in labels:
        for token in label.split():
            key, sep, value = token.partition("=")
            if sep and key == "index":
                try:
                    return int(value)
                except ValueError:
                    return None
    return None


def looks_like(s: SpectrumAnalysis) -> int | None:
    """Return the mode the spectrum looks like: 2 (empty wedge, flat), 1 (falling) or None."""
    if not s.wedge_found or s.radial_slope is None:
        return None
    empty = s.wedge_ratio is None or s.wedge_ratio <= MODE2_MAX_RATIO
    if empty and abs(s.radial_slope) <= MODE2_MAX_SLOPE:
        return 2
    if s.radial_slope <= MODE1_MAX_SLOPE:
        return 1
    return None


def compare_spectrum(
    s: SpectrumAnalysis, expected: NoiseParams | None, out: dict | None = None
) -> list[str]:
    """Problems found by comparing the spectrum with the labels (and with any wedge at all).

    Parameters
    ----------
    s : SpectrumAnalysis
        The analysis of the folder's averaged spectrum.
    expected : NoiseParams or None
        What the labels record; None compares with nothing but the presence of a wedge.
    out : dict, optional
        Filled with the expected values and the verdicts, for the JSON report.
    """
    out = {} if out is None else out
    problems = []
    if not s.wedge_found:
        problems.append(
            f"no missing wedge in the kx-kz plane: the power varies by a factor"
            f" {1 / max(s.contrast, 1e-300):.2f} with direction (is the tilt axis y?)."
        )
        return problems
    lo, hi = s.tilt_range
    if hi > 90.0 or lo < -90.0:
        problems.append(
            f"the measured region contains the beam direction kz (tilts {lo:.1f}..{hi:.1f}):"
            " the volumes' axes may be swapped; mwr-dask and IsoNet expect (z, y, x) with the"
            " beam along z."
        )
    if expected is None:
        return problems
    lo_range, hi_range = expected_tilt_edges(
        expected.mode, expected.minangle, expected.maxangle, expected.anglestep
    )
    u_lo, u_hi = s.tilt_uncertainty
    off_lo = max(lo_range[0] - lo, lo - lo_range[1], 0.0)
    off_hi = max(hi_range[0] - hi, hi - hi_range[1], 0.0)
    tilt_ok = off_lo <= u_lo + TILT_SLACK_DEG and off_hi <= u_hi + TILT_SLACK_DEG
    out["expected_tilt_edges"] = [list(lo_range), list(hi_range)]
    out["tilt_range_agrees"] = bool(tilt_ok)
    if not tilt_ok:
        problems.append(
            f"the spectrum's tilt range {lo:.1f}..{hi:.1f} deg disagrees with the labels'"
            f" {expected.minangle:g}..{expected.maxangle:g} (edges expected within"
            f" {u_lo + TILT_SLACK_DEG:.1f} and {u_hi + TILT_SLACK_DEG:.1f} deg)."
        )
    mode = looks_like(s)
    out["mode_agrees"] = mode == expected.mode
    if mode != expected.mode:
        seen = "neither mode" if mode is None else f"mode {mode} ({MODES[mode]})"
        ratio = "n/a" if s.wedge_ratio is None else f"{s.wedge_ratio:.2g}"
        slope = "n/a" if s.radial_slope is None else f"{s.radial_slope:.2f}"
        problems.append(
            f"the labels say mode {expected.mode} ({MODES.get(expected.mode, '?')}) but the"
            f" spectrum looks like {seen}: wedge/measured power {ratio}, radial slope {slope}."
        )
    return problems


# ----------------------------------------------------------------------------- the run


def list_folder(folder: Path) -> tuple[list[str], list[str]]:
    """Names of the ``n_*.mrc`` files of ``folder`` and of every other entry, sorted."""
    volumes, others = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if NAME_PATTERN.match(entry.name) and entry.is_file():
                volumes.append(entry.name)
            else:
                others.append(entry.name)
    return sorted(volumes), sorted(others)


def _sees(folder: str) -> bool:
    return os.path.isdir(folder) and os.access(folder, os.R_OK | os.X_OK)


def workers_missing_folder(client, folder: Path) -> list[str]:
    """One sentence per worker of ``client`` that cannot read ``folder``."""
    answers = client.run(_sees, str(folder))
    return [f"worker {w} cannot read {folder}" for w, ok in sorted(answers.items()) if not ok]


def inspect_folder(
    folder: Path,
    client=None,
    *,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FolderReport:
    """Inspect every volume of ``folder`` on ``client``'s cluster (or in this process).

    Parameters
    ----------
    folder : pathlib.Path
        A noise folder.
    client : distributed.Client, optional
        Connected client; None computes in this process (no Dask).
    workers : int, optional
        Worker threads to plan partitions for; default: the cluster's total.
    on_progress : callable, optional
        Called with (files done, files) after each partition.
    """
    from mwr_dask.pipeline import partition_ranges

    folder = Path(folder).absolute()
    names, others = list_folder(folder)
    paths = [str(folder / n) for n in names]
    results = []
    if paths and client is None:
        results = [inspect_partition(paths)]
    elif paths:
        import dask.bag as db
        from distributed import as_completed

        if workers is None:
            workers = sum(client.nthreads().values()) or 1
        probe = paths[:: max(1, len(paths) // 50)]
        size = max(1, int(np.median([os.path.getsize(p) for p in probe])))
        ranges = partition_ranges(0, len(paths), workers, size)
        chunks = [paths[r.start : r.stop] for r in ranges]
        bag = db.from_sequence(chunks, npartitions=len(chunks)).map_partitions(_partition)
        futures = client.compute(bag.to_delayed())
        done = 0
        for future in as_completed(futures):
            (part,) = future.result()
            results.append(part)
            done += len(part["records"])
            future.release()
            if on_progress is not None:
                on_progress(done, len(paths))
    records, spectra = [], {}
    for part in results:
        records.extend(part["records"])
        for n, (total, count) in part["spectra"].items():
            acc = spectra.setdefault(n, [np.zeros_like(total), 0])
            acc[0] += total
            acc[1] += count
    return reduce_folder(folder, records, others, spectra)


# ----------------------------------------------------------------------------- text report


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _others(count: int) -> str:
    return {0: "no other entries", 1: "1 other entry"}.get(count, f"{count} other entries")


def _edge_range(edges: tuple[float, float]) -> str:
    lo, hi = edges
    return f"{lo:g}" if lo == hi else f"[{lo:g}, {hi:g}]"


def render_text(report: FolderReport, timing: str | None = None) -> str:
    """Write the report for people: the folder, the spectrum, problems, a verdict line.

    Parameters
    ----------
    report : FolderReport
        What :func:`inspect_folder` found.
    timing : str, optional
        A line on how long reading took, shown before the problems.
    """
    s = report.summary
    lines = [f"Folder      {report.folder}"]
    if s["count"]:
        lo, hi = s["index_range"]
        gaps = sum(b - a + 1 for a, b in s["gaps"])
        lines.append(
            f"Volumes     {s['count']} n_*.mrc, indices {lo}..{hi}, "
            + ("no gaps" if not gaps else f"{gaps} missing")
            + f"; {_others(len(report.others))}"
        )
        shapes = ", ".join(f"{k} ({v})" for k, v in s["shapes"].items()) or "none readable"
        dtypes = ", ".join(f"{k} ({v})" for k, v in s["dtypes"].items())
        voxels = ", ".join(f"{k:g} A ({v})" for k, v in s["voxel_sizes"].items())
        lines.append(f"Cube        {shapes}; {dtypes}; voxel size {voxels}")
        if report.expected is not None:
            agree = s.get("labels_agreeing", 0)
            lines.append(
                f"Labels      {report.expected.describe()} ({agree} of {s['count']} volumes)"
            )
        else:
            lines.append("Labels      none (not written by mwr-dask)")
        if s["good"]:
            lo_s, hi_s = s["volume_std_range"]
            lines.append(
                f"Data        mean {s['mean']:.4f}, std {s['std']:.4f} over {s['good']} good"
                f" volumes; per-volume std {lo_s:.4f}..{hi_s:.4f}"
            )
        broken = len(s["broken"])
        lines.append(
            "Files       "
            + (
                f"all {s['count']} readable, valid, {_shape(tuple(s['cube']))} float32, finite"
                if not broken
                else f"{broken} of {s['count']} broken (below)"
            )
        )
        dup = len(s["duplicates"])
        near = len(s["near_duplicates"])
        lines.append(
            "Duplicates  "
            + (f"{_plural(dup, 'group')} of identical volumes" if dup else "no identical data")
            + " (SHA-256); "
            + (
                f"{_plural(near, 'near-duplicate pair')}"
                if near
                else f"no near-duplicates (|r| >= {NEAR_CORRELATION} on {SAMPLE_VOXELS} voxels"
                f" or >= {NEAR_SHARED:.0%} of the voxels shared)"
            )
        )
    sp = report.spectrum
    if sp is not None:
        lines.append(
            f"Spectrum    {sp.volumes} volumes averaged, kx-kz plane, radii"
            f" {sp.band[0]:.1f}..{sp.band[1]:.1f} Fourier pixels"
        )
        e = report.expected
        info = s["spectrum"]
        if sp.wedge_found:
            lo, hi = sp.tilt_range
            u_lo, u_hi = sp.tilt_uncertainty
            est = f"{lo:.1f} .. {hi:.1f} deg (resolution {u_lo:.1f}, {u_hi:.1f})"
        else:
            est = "no wedge found"
        exp_t = ""
        if e is not None and sp.wedge_found:
            lo_r, hi_r = info["expected_tilt_edges"]
            verdict = "agrees" if info["tilt_range_agrees"] else "DISAGREES"
            exp_t = f"  labels {e.minangle:g}..{e.maxangle:g}"
            if e.mode == 1:
                exp_t += f" (edges in {_edge_range(lo_r)} and {_edge_range(hi_r)})"
            exp_t += f"  {verdict}"
        lines.append(f"  tilt range       {est}{exp_t}")
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
        if e is not None:
            verdict = "agrees" if info.get("mode_agrees") else "DISAGREES"
            lines.append(f"  looks like       {seen}  labels: mode {e.mode}  {verdict}")
        else:
            lines.append(f"  looks like       {seen}")
    if timing:
        lines.append(f"Time        {timing}")
    for p in report.problems:
        lines.append(f"problem: {p}")
    for w in report.warnings:
        lines.append(f"warning: {w}")
    n_p, n_w = len(report.problems), len(report.warnings)
    if report.ok:
        lines.append(
            f"OK: {_plural(s['count'], 'volume')}, no problems, {_plural(n_w, 'warning')}."
        )
    else:
        lines.append(f"FAILED: {_plural(n_p, 'problem')}, {_plural(n_w, 'warning')}.")
    return "\n".join(lines)
