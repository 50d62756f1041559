"""The worker side of ``inspect``: open, validate, hash, moments, sample, sketch, spectrum.

Files are opened as :mod:`mwr_dask.files.mrc` opens them: only regular files, never through
a symbolic link (a FIFO or a device named ``n_*.mrc`` is reported, never opened). Their data
are read only when the header's sizes agree with the file's and the volume fits the memory a
worker may use: a header claiming a huge volume or extended header is reported, not
allocated. A partition sends back small :class:`~.records.FileRecord` objects and one summed
spectrum per cube side, never a volume.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from mrcfile.mrcinterpreter import MrcInterpreter

from mwr_dask.files.mrc import HEADER_BYTES, file_kind, open_regular, parse_header
from mwr_dask.inspection.records import FileRecord, is_cube, scheme_key
from mwr_dask.inspection.spectrum import slice_power
from mwr_dask.noise.measured import mrc_extent
from mwr_dask.noise.source import NAME_PATTERN

#: Voxels sampled (same positions in every volume of a shape) for the near-duplicate check.
SAMPLE_VOXELS = 512
#: Hashes kept per volume to estimate the fraction of voxels two volumes share (shifted).
SKETCH_SIZE = 64
#: Bytes of memory the checks of one volume need per byte of float32 data (the data, a
#: centred copy, the squares, the sketch's hashes, the spectrum's FFT): measured peak about 4.
READ_COPIES = 5
#: Share of a worker's memory limit one volume's checks may use (Dask's nanny pauses a worker
#: at 80% of its limit and kills it at 95%; other tasks and the interpreter need the rest).
READ_SHARE = 0.6
#: Magic numbers of the compressed files mrcfile.open would decompress.
COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"))


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


def read_limit(memory: int | None = None) -> int:
    """Largest data block, bytes, that the checks of one volume may read into ``memory``.

    ``memory``: the worker's memory limit, bytes; None takes the machine's memory.
    """
    if not memory:
        import psutil  # comes with distributed

        memory = psutil.virtual_memory().total
    return int(memory * READ_SHARE / READ_COPIES)


def _size_problem(shape: tuple[int, ...], mode: int, nsymbt: int, size: int, limit: int):
    """Why the data block should not be read (None: read it): beyond the file or ``limit``."""
    try:
        extent = mrc_extent(shape, mode, nsymbt)
    except ValueError as err:
        return str(err)
    if size < extent:
        return f"truncated: {size} of {extent} bytes"
    data_bytes = extent - HEADER_BYTES - nsymbt
    if data_bytes > limit:
        z, y, x = shape
        return (
            f"too large to check: the header gives {z}x{y}x{x} voxels"
            f" ({data_bytes / 2**30:.3g} GiB), more than the {limit / 2**30:.3g} GiB"
            " one volume may take on a worker"
        )
    return None


def _open(path: str, rec: FileRecord):
    """Open ``path`` for reading, or return None with ``rec.error`` saying why not."""
    try:
        try:
            return os.fdopen(open_regular(Path(path)), "rb")
        except ValueError:  # not a regular file (changed since the folder was listed)
            rec.error = f"{file_kind(os.lstat(path).st_mode)}, not a regular file"
    except OSError as err:
        rec.error = f"unreadable: {err.strerror or err}"
    return None


def read_volume(path: str, limit: int | None = None) -> tuple[FileRecord, np.ndarray | None]:
    """Open, validate and read one volume file: its record, and its (z, y, x) data or None.

    ``limit``: largest data block to read, bytes; default :func:`read_limit`.
    """
    name = os.path.basename(path)
    match = NAME_PATTERN.match(name)
    rec = FileRecord(name=name, index=int(match.group(1)) if match else -1)
    f = _open(path, rec)
    if f is None:
        return rec, None
    try:
        with f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return rec, _read(f, rec, read_limit() if limit is None else limit)
    except (OSError, ValueError) as err:
        rec.error = f"unreadable: {getattr(err, 'strerror', None) or err}"
    except Exception as err:  # mrcfile on garbage can fail in many ways
        rec.error = f"unreadable: {type(err).__name__}: {err}"
    return rec, None


def _read(f, rec: FileRecord, limit: int) -> np.ndarray | None:
    """Header checks, mrcfile's validation and the data of the open file ``f``."""
    rec.size = os.fstat(f.fileno()).st_size
    raw = f.read(HEADER_BYTES)
    for magic, what in COMPRESSED:
        if raw.startswith(magic):
            rec.error = f"compressed ({what}): inspect reads uncompressed MRC files only"
            return None
    if len(raw) == HEADER_BYTES:
        h = parse_header(raw, rec.size)
        rec.shape, rec.mrc_mode, rec.voxel_size = h.shape, h.mode, h.voxel_size
        rec.labels = h.labels
        rec.error = _size_problem(h.shape, h.mode, h.nsymbt, rec.size, limit)
        if rec.error is not None:
            return None
    f.seek(0)
    mrc = MrcInterpreter(iostream=f, permissive=True)
    report = io.StringIO()
    valid = mrc.validate(print_file=report)
    if mrc.data is None:
        rec.error = "unreadable: the data block cannot be read"
        return None
    expected = mrc.header.nbytes + mrc.extended_header.nbytes + mrc.data.nbytes
    if rec.size != expected:  # the check MrcFile.validate adds to the interpreter's
        print(
            f"File is larger than expected. Actual size: {rec.size} bytes;"
            f" expected size: {expected} bytes (calculated from header)",
            file=report,
        )
        valid = False
    if not valid:
        rec.invalid = [line for line in report.getvalue().splitlines() if line]
    return np.asarray(mrc.data)


def inspect_file(path: str, limit: int | None = None) -> tuple[FileRecord, np.ndarray | None]:
    """:func:`read_volume`, then the digest, moments, sample and sketch of the data."""
    rec, data = read_volume(path, limit)
    if data is None:
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


def inspect_partition(paths: list[str], memory: int | None = None) -> dict:
    """Inspect files on a worker (``memory``: its limit, bytes, see :func:`read_limit`).

    Returns ``records`` (:class:`~.records.FileRecord`), ``spectra``: {side: [sum of
    :func:`~.spectrum.slice_power`, count]} over the readable, finite cubes, and
    ``scheme_spectra``: the same per (side, :func:`~.records.scheme_key`).
    """
    records, spectra, schemes = [], {}, {}
    limit = read_limit(memory)
    for path in paths:
        rec, data = inspect_file(path, limit)
        records.append(rec)
        if data is not None and is_cube(rec.shape) and rec.nonfinite == 0 and rec.m2 > 0:
            n = rec.shape[0]
            power = slice_power(data)
            accs = [spectra.setdefault(n, [np.zeros((n, n // 2 + 1)), 0])]
            key = scheme_key(rec.labels)
            if key is not None:
                accs.append(schemes.setdefault((n, key), [np.zeros((n, n // 2 + 1)), 0]))
            for acc in accs:
                acc[0] += power
                acc[1] += 1
    return {"records": records, "spectra": spectra, "scheme_spectra": schemes}


def full_correlation(a: str, b: str) -> float | None:
    """Correlation of the data of two volume files (None if either cannot be read)."""
    x, y = read_volume(str(a))[1], read_volume(str(b))[1]
    if x is None or y is None or x.shape != y.shape:
        return None
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.std() == 0 or y.std() == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    return float(np.corrcoef(x, y)[0, 1])
