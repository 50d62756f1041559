"""The worker side of ``inspect``: open, validate, hash, moments, sample, sketch, spectrum.

Each file is opened only when it is a regular file (a FIFO or a device named ``n_*.mrc`` is
reported, never opened), and its data are read only when the header's size agrees with the
file's and the volume fits the memory a worker may use: a header claiming a huge volume is
reported, not allocated. A partition sends back small :class:`~.records.FileRecord` objects
and one summed spectrum per cube side, never a volume.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
import warnings

import mrcfile
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.mrcinterpreter import MrcInterpreter

from mwr_dask.files.mrc import HEADER_BYTES
from mwr_dask.inspection.records import FileRecord, is_cube, scheme_key
from mwr_dask.inspection.spectrum import slice_power
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
#: Fallback memory, bytes, when neither Dask nor psutil can tell (1 GiB).
DEFAULT_MEMORY = 2**30


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


def memory_limit() -> int:
    """Bytes this process may use: the Dask worker's memory limit, else the machine's memory."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
        if limit:
            return int(limit)
    except (ImportError, ValueError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return DEFAULT_MEMORY


def read_limit(memory: int | None = None) -> int:
    """Largest data block, bytes, that the checks of one volume may read into ``memory``."""
    return int((memory_limit() if memory is None else memory) * READ_SHARE / READ_COPIES)


#: Magic numbers of the compressed files mrcfile.open would decompress.
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"))

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """Say what a non-regular file is, in words (``a FIFO``)."""
    return next((word for test, word in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str):
    """Open ``path`` for reading only if it is a regular file (after following symlinks).

    Returns
    -------
    file or str
        A binary file object, or one phrase saying why the path was not opened.
    """
    try:
        st = os.stat(path)
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    if not stat.S_ISREG(st.st_mode):
        return f"{file_kind(st.st_mode)}, not a regular file"
    # O_NONBLOCK: if the entry became a FIFO since, opening it does not wait for a writer
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return f"{file_kind(st.st_mode)}, not a regular file"
    if flags & getattr(os, "O_NONBLOCK", 0):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _header_fields(raw: bytes) -> np.record | None:
    """Parse the 1024-byte MRC header in its own byte order (None when too short)."""
    if len(raw) < HEADER_BYTES:
        return None
    header = np.frombuffer(raw[:HEADER_BYTES], dtype=HEADER_DTYPE).view(np.recarray)[0]
    try:
        order = mrcfile.utils.byte_order_from_machine_stamp(header.machst)
    except ValueError:
        order = "<"
    dtype = HEADER_DTYPE.newbyteorder(order)
    return np.frombuffer(raw[:HEADER_BYTES], dtype=dtype).view(np.recarray)[0]


def _size_problem(header: np.record, size: int, limit: int) -> str | None:
    """Why the data block of this header should not be read (None: read it).

    A data block longer than the file (a truncated file, or a header claiming a huge volume)
    is reported without allocating it, and so is one larger than ``limit`` bytes.
    """
    dims = [int(header.nx), int(header.ny), int(header.nz)]
    try:
        itemsize = mrcfile.utils.dtype_from_mode(header.mode).itemsize
    except ValueError:
        return f"unknown MRC data mode {int(header.mode)}"
    if min(dims) < 0:
        return None  # mrcfile reports it
    data_bytes = dims[0] * dims[1] * dims[2] * itemsize
    expected = HEADER_BYTES + max(int(header.nsymbt), 0) + data_bytes
    if size < expected:
        return f"truncated: {size} of {expected} bytes"
    if data_bytes > limit:
        return (
            f"too large to check: the header gives {dims[2]}x{dims[1]}x{dims[0]} voxels"
            f" ({data_bytes / 2**30:.3g} GiB), more than the {limit / 2**30:.3g} GiB"
            " one volume may take on a worker"
        )
    return None


def _fill_from_header(rec: FileRecord, h) -> None:
    """Shape, mode, voxel size and labels of a record from an MRC header."""
    rec.shape = (int(h.nz), int(h.ny), int(h.nx))
    rec.mrc_mode = int(h.mode)
    nlabl = min(max(int(h.nlabl), 0), 10)
    rec.labels = [bytes(lab).decode("ascii", "replace").strip() for lab in h.label[:nlabl]]


def read_volume(path: str, limit: int | None = None) -> tuple[FileRecord, np.ndarray | None]:
    """Open, validate and read one volume file, or say why not.

    Parameters
    ----------
    path : str
        Path of an ``n_*.mrc`` file.
    limit : int, optional
        Largest data block to read, bytes; default :func:`read_limit`.

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
    opened = open_regular(path)
    if isinstance(opened, str):
        rec.error = opened
        return rec, None
    try:
        with opened as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec.size = os.fstat(f.fileno()).st_size
            raw = f.read(HEADER_BYTES)
            for magic, what in _COMPRESSED:
                if raw.startswith(magic):
                    rec.error = f"compressed ({what}): inspect reads uncompressed MRC files only"
                    return rec, None
            header = _header_fields(raw)
            if header is not None:
                _fill_from_header(rec, header)
                rec.voxel_size = float(header.cella.x / header.mx) if header.mx else 0.0
                why = _size_problem(header, rec.size, read_limit() if limit is None else limit)
                if why is not None:
                    rec.error = why
                    return rec, None
            f.seek(0)
            mrc = MrcInterpreter(iostream=f, permissive=True)
            h = mrc.header
            _fill_from_header(rec, h)
            rec.voxel_size = float(mrc.voxel_size.x)
            report = io.StringIO()
            valid = mrc.validate(print_file=report)
            if mrc.data is not None:  # the check MrcFile.validate adds to the interpreter's
                expected = h.nbytes + mrc.extended_header.nbytes + mrc.data.nbytes
                if rec.size != expected:
                    print(
                        f"File is larger than expected. Actual size: {rec.size} bytes;"
                        f" expected size: {expected} bytes (calculated from header)",
                        file=report,
                    )
                    valid = False
            if not valid:
                rec.invalid = [line for line in report.getvalue().splitlines() if line]
            if mrc.data is None:
                rec.error = "unreadable: the data block cannot be read"
                return rec, None
            data = np.asarray(mrc.data)
    except (OSError, ValueError) as err:
        rec.error = f"unreadable: {getattr(err, 'strerror', None) or err}"
        return rec, None
    except Exception as err:  # mrcfile on garbage can fail in many ways
        rec.error = f"unreadable: {type(err).__name__}: {err}"
        return rec, None
    return rec, data


def inspect_file(path: str, limit: int | None = None) -> tuple[FileRecord, np.ndarray | None]:
    """Read and check one volume file: :func:`read_volume`, then digest, moments and sketch.

    Parameters
    ----------
    path : str
        Path of an ``n_*.mrc`` file.
    limit : int, optional
        Largest data block to read, bytes; default :func:`read_limit`.

    Returns
    -------
    record : FileRecord
        Everything but the data.
    data : numpy.ndarray or None
        The volume, (z, y, x), when it could be read; None otherwise.
    """
    rec, data = read_volume(path, limit)
    if data is not None:
        _measure(rec, data)
    return rec, data


def _measure(rec: FileRecord, data: np.ndarray) -> None:
    """Digest, moments, sample and sketch of ``data`` into ``rec``."""
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


def inspect_partition(paths: list[str]) -> dict:
    """Inspect files on a worker: their records and the sum of their spectra per cube side.

    Returns
    -------
    dict
        ``records``: list of :class:`~.records.FileRecord`; ``spectra``: {side: [sum of
        :func:`~mwr_dask.inspection.spectrum.slice_power`, count]} over the readable, finite cubes;
        ``scheme_spectra``: the same per (side, :func:`~.records.scheme_key`) over those of
        them that name their tilt scheme (empty for folders made without ``--tilt-file``).
    """
    records, spectra, schemes = [], {}, {}
    limit = read_limit()
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


def inspect_chunks(chunks: list[list[str]]) -> list[dict]:
    """:func:`inspect_partition` of a Dask bag partition (a list of lists of paths)."""
    return [inspect_partition([p for chunk in chunks for p in chunk])]


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
