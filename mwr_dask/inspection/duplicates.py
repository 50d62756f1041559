"""Exact and near-duplicate volumes, from the records alone (no file is read here).

- exact: equal SHA-256 of dtype, shape and data bytes;
- near, by correlation: the voxel samples of every pair of up to ``NEAR_MAX_VOLUMES`` volumes;
- near, shifted: MinHash sketches of the pairs of x-neighbours (crops of one larger volume).

The full-volume correlation of the first pairs found is computed by a function the caller
passes (the orchestration reads the two files; tests pass anything).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable

import numpy as np

from mwr_dask.inspection.records import FileRecord

#: Volumes whose samples are compared pair by pair (a random choice of them beyond).
NEAR_MAX_VOLUMES = 5000
#: Correlation on the sample above which two volumes are reported as near-duplicates.
NEAR_CORRELATION = 0.5
#: Hashes two sketches must share before their overlap is estimated (chance collisions: 1).
SKETCH_MIN_SHARED = 3
#: Estimated fraction of shared voxels above which two volumes are near-duplicates.
NEAR_SHARED = 0.5
#: Near-duplicate pairs whose correlation is recomputed on the whole volumes.
CONFIRM_PAIRS = 20


def identical_groups(records: list[FileRecord]) -> list[list[str]]:
    """Return the groups of names whose data are identical (same digest), in the records' order."""
    by_digest = defaultdict(list)
    for r in records:
        if r.digest is not None:
            by_digest[r.digest].append(r.name)
    return [names for names in by_digest.values() if len(names) > 1]


def correlated_pairs(
    records: list[FileRecord],
    threshold: float = NEAR_CORRELATION,
    max_volumes: int = NEAR_MAX_VOLUMES,
) -> tuple[list[tuple[int, int, float]], int]:
    """Pairs (i, j, r) of ``records`` whose voxel samples correlate with |r| >= threshold.

    Every pair of up to ``max_volumes`` volumes is compared (a fixed random choice of that
    many when there are more); an estimate from n sampled voxels has a standard error of
    about 1 / sqrt(n) for independent volumes. Returns the pairs (``i < j``) and the number
    of volumes compared.
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

    From the bottom-k sketches (:func:`~.reading.value_sketch`): the Jaccard index J of the
    two sets of neighbour pairs is estimated by the share of the k smallest hashes of their
    union found in both; f = 2J / (1 + J) is the fraction of each volume found in the other
    (equal sizes).
    """
    out = []
    for (i, j), shared in _shared_hashes(records).items():
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


def _shared_hashes(records: list[FileRecord]) -> Counter:
    """How many sketch hashes each pair (i, j), i < j, shares (not those of over 64 volumes)."""
    holders = defaultdict(list)
    for i, r in enumerate(records):
        for h in [] if r.sketch is None else r.sketch.tolist():
            holders[h].append(i)
    common = Counter()
    for owners in holders.values():
        if 1 < len(owners) <= 64:
            common.update(itertools.combinations(owners, 2))
    return common


def near_duplicates(
    records: list[FileRecord],
    correlate: Callable[[str, str], float | None] | None = None,
    confirm: int = CONFIRM_PAIRS,
) -> tuple[list[dict], int]:
    """Near-duplicate pairs of different data, by sampled correlation or shared values.

    ``correlate(name_a, name_b)``: the correlation of the whole volumes (None if unknown),
    called for the first ``confirm`` pairs. Returns dicts of ``pair`` (two names),
    ``sample_correlation`` and/or ``shared_values`` and ``correlation`` when computed, and the
    number of volumes compared by correlation.
    """
    same = {r.name: r.digest for r in records}
    near: dict[tuple[str, str], dict] = {}
    pairs, compared = correlated_pairs(records)
    for i, j, c in pairs:
        a, b = records[i].name, records[j].name
        if same[a] != same[b]:
            near[a, b] = {"pair": [a, b], "sample_correlation": round(c, 4)}
    for i, j, f in shared_value_pairs(records):
        a, b = records[i].name, records[j].name
        if same[a] != same[b]:
            near.setdefault((a, b), {"pair": [a, b]})["shared_values"] = round(f, 3)
    if correlate is not None:
        for key in list(near)[:confirm]:
            r = correlate(*key)
            if r is not None:
                near[key]["correlation"] = round(r, 4)
    return list(near.values()), compared
