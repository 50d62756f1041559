"""Reading and writing noise volumes as MRC files, atomically.

A volume is written to a temporary file in the run's state folder (a hidden sibling of the
output folder, on the same filesystem), flushed, then renamed into place with ``os.replace``:
the output folder only ever holds complete ``n_*.mrc`` files.

The file is the 1024-byte header followed by the data. The header of a geometry (shape, voxel
size) is built once by mrcfile itself; each volume fills in only its statistics, computed with
the very numpy calls mrcfile uses, and its labels. The bytes are those that ``mrcfile.new`` and
``set_data`` would write, without the cost of opening an MRC object per file.
"""

from __future__ import annotations

import functools
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.mrcinterpreter import MrcInterpreter

HEADER_BYTES = 1024
#: Most labels an MRC header holds, and the longest label.
MAX_LABELS, LABEL_BYTES = 10, 80


def state_dir(folder: Path) -> Path:
    """Hidden sibling of ``folder`` for temporaries and the lock: ``.<name>.mwr-dask``."""
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.mwr-dask"


@functools.lru_cache(maxsize=16)
def _header_template(shape: tuple[int, ...], voxel_size: float) -> np.recarray:
    """Header of a float32 volume of ``shape`` as mrcfile writes it, without statistics or labels.

    Made with mrcfile's in-memory interpreter (``_create_default_attributes`` is the documented
    way to use it without a stream): its defaults, byte order, mode, dimensions and cell.
    """
    mrc = MrcInterpreter()
    mrc._create_default_attributes()
    mrc.set_data(np.zeros(shape, dtype=np.float32))
    mrc.voxel_size = voxel_size
    header = mrc.header.copy()
    header.nlabl = 0
    header.label[:] = b""
    return header


def volume_header(data: np.ndarray, voxel_size: float, labels: list[str]) -> bytes:
    """Return the 1024-byte header of ``data`` (float32) as mrcfile.new and set_data write it.

    Statistics use mrcfile's own expressions (float32 mean and standard deviation), so that the
    header is the same, byte for byte.

    Raises
    ------
    ValueError
        More than 10 labels, or a label that is not printable ASCII of at most 80 characters.
    """
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, not {len(labels)}")
    header = _header_template(data.shape, float(voxel_size)).copy()
    header.dmin = np.float32(data.min())
    header.dmax = np.float32(data.max())
    header.dmean = data.mean(dtype=np.float32)
    header.rms = data.std(dtype=np.float32)
    for i, label in enumerate(labels):
        raw = label.encode("ascii")  # UnicodeEncodeError is a ValueError
        if len(raw) > LABEL_BYTES or not label.isprintable():
            raise ValueError(f"label must be printable ASCII of at most 80 characters: {label!r}")
        header.label[i] = raw
    header.nlabl = len(labels)
    return header.tobytes()


def write_volume(
    path: Path,
    data: np.ndarray,
    voxel_size: float,
    labels: list[str],
    tmp_dir: Path,
    *,
    fsync: bool = False,
) -> None:
    """Write ``data`` (float32, (z, y, x)) to ``path`` atomically.

    Parameters
    ----------
    path : pathlib.Path
        Final location of the file.
    data : numpy.ndarray
        float32 volume, axes (z, y, x).
    voxel_size : float
        Voxel size, angstroms, for the header.
    labels : list of str
        Up to 10 printable ASCII labels of at most 80 characters.
    tmp_dir : pathlib.Path
        Folder on the same filesystem as ``path`` for the temporary file.
    fsync : bool
        Force the data to disk before the rename, so that a node crash cannot leave a
        renamed but empty file.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    # no timestamped "Created by" label: the same volume gives the same bytes
    header = volume_header(data, voxel_size, labels)
    tmp = Path(tmp_dir) / f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(data.reshape(-1).view(np.uint8))
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class VolumeHeader:
    """What the header of a volume file says."""

    shape: tuple[int, int, int]
    mode: int
    voxel_size: float
    labels: list[str]
    size: int


def read_header(path: Path) -> VolumeHeader:
    """Read the header of ``path`` (no data); raises ``ValueError`` or ``OSError`` if unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            h = mrc.header
            if h is None:
                raise ValueError("not an MRC file")
            shape = (int(h.nz), int(h.ny), int(h.nx))
            labels = [lab.decode("ascii", "replace").strip() for lab in h.label[: int(h.nlabl)]]
            return VolumeHeader(
                shape=shape,
                mode=int(h.mode),
                voxel_size=float(mrc.voxel_size.x),
                labels=labels,
                size=os.path.getsize(path),
            )


def is_complete(path: Path, cubesize: int) -> bool:
    """Cheap check that ``path`` is a whole float32 cube of side ``cubesize``.

    Checks the header's shape and data mode and the file size; does not read the data.
    """
    try:
        h = read_header(path)
    except (OSError, ValueError):
        return False
    n = cubesize
    exthdr = h.size - HEADER_BYTES - 4 * n**3
    return h.shape == (n, n, n) and h.mode == 2 and exthdr == 0


def is_intact(path: Path, cubesize: int, labels: list[str]) -> bool:
    """Full check of a volume file: :func:`is_complete`, its labels, and all of its data.

    The labels must be ``labels`` (the provenance of the expected volume), and the data must
    be finite with mean 0 and standard deviation 1 (as every volume is written).
    """
    if not is_complete(path, cubesize):
        return False
    try:
        if read_header(path).labels[: len(labels)] != labels:
            return False
        data = read_volume(path)
    except (OSError, ValueError):
        return False
    if not np.all(np.isfinite(data)):
        return False
    flat = data.reshape(-1).astype(np.float64)
    return abs(flat.mean()) < 1e-3 and abs(flat.std() - 1.0) < 1e-3


def read_volume(path: Path) -> np.ndarray:
    """Read the data of a volume file, float32 (z, y, x)."""
    with mrcfile.open(path, permissive=True) as mrc:
        return np.asarray(mrc.data, dtype=np.float32).copy()
