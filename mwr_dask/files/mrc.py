"""Reading and writing noise volumes as MRC files, atomically and without following links.

A volume is an anonymous ``O_TMPFILE`` in the output folder, linked into place when complete
(or, where the filesystem refuses it, a named temporary in the private sibling folder, renamed),
written through folder descriptors checked before every volume; docs/reliability.md. The bytes
are those ``mrcfile.new`` and ``set_data`` write, from a header template mrcfile builds once per
geometry. Headers are parsed from the first 1 KiB with mrcfile's dtype:
``mrcfile.open(header_only=True)`` costs three times as much per file and allocates the
extended header a corrupt file may claim to be gigabytes long.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import stat
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile import utils as mrcutils
from mrcfile.constants import MAP_ID
from mrcfile.dtypes import HEADER_DTYPE

from mwr_dask.noise.inputs import file_kind
from mwr_dask.noise.measured import check_spectrum, spectrum_digest

HEADER_BYTES = 1024
#: Most labels an MRC header holds, and the longest label.
MAX_LABELS, LABEL_BYTES = 10, 80
#: Longest file name (bytes) of the filesystems in use (Linux NAME_MAX).
NAME_MAX = 255
#: ``linkat`` flag: link the file that the descriptor refers to (Linux).
_AT_EMPTY_PATH = 0x1000
#: ``open`` errors that mean "this filesystem (or kernel) has no O_TMPFILE".
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOSYS}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: ``errno`` of a volume refused because its folder was replaced during the run (it stops the
#: run); also what NFS says when a folder held open was removed on the server.
FOLDER_REPLACED = errno.ESTALE
_OPENING = threading.Lock()
#: The folders this process opened: (path, the run's inode) -> (descriptor, (st_dev, st_ino)).
_OPENED: dict[tuple[str, int | None], tuple[int, tuple[int, int]]] = {}


def state_dir(folder: Path) -> Path:
    """Hidden sibling ``.<name>.mwr-dask`` of the real ``folder`` (hashed past NAME_MAX)."""
    real = Path(os.path.realpath(Path(folder).absolute()))
    raw = os.fsencode(real.name)
    name = b"." + raw + b".mwr-dask"
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(raw).hexdigest()[:16].encode()
        name = b"." + raw[:200] + b"~" + digest + b".mwr-dask"
    return real.parent / os.fsdecode(name)


@functools.lru_cache(maxsize=16)
def header_template(shape: tuple[int, ...], voxel_size: float) -> np.recarray:
    """Header of a float32 volume of ``shape`` as ``mrcfile.new_mmap`` writes it (sparse file)."""
    with tempfile.TemporaryDirectory(prefix="mwr-dask-header-") as folder:
        path = os.path.join(folder, "template.mrc")
        with mrcfile.new_mmap(path, shape=shape, mrc_mode=2) as mrc:
            mrc.voxel_size = voxel_size
            header = mrc.header.copy()
    header.nlabl = 0
    header.label[:] = b""
    return header


def volume_header(data: np.ndarray, voxel_size: float, labels: list[str]) -> bytes:
    """Return the 1024-byte header of ``data`` (float32) as mrcfile.new and set_data write it.

    Statistics use mrcfile's own float32 expressions, so the header is the same byte for byte.
    """
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, not {len(labels)}")
    header = header_template(data.shape, float(voxel_size)).copy()
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
    tmp_dir: Path | None = None,
    *,
    fsync: bool = False,
    inodes: tuple[int | None, int | None] | None = None,
) -> None:
    """Write ``data`` (float32, (z, y, x)) to ``path`` atomically; an existing entry is unlinked.

    ``tmp_dir`` None or the folder of ``path``: an anonymous ``O_TMPFILE`` there; another
    (private, same filesystem): a named temporary there, renamed. ``fsync`` before the name, so
    a node crash cannot leave a named empty file. ``inodes``: the folders' inode numbers as the
    run recorded them, reached through :func:`opened_folder`. On OSError nothing is left.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    # no timestamped "Created by" label: the same volume gives the same bytes
    header = volume_header(data, voxel_size, labels)
    body = data.reshape(-1).view(np.uint8)
    path = Path(path)
    if inodes is not None:
        dfd = opened_folder(str(path.parent), inodes[0])
        if tmp_dir is None or str(tmp_dir) == str(path.parent):
            _write_anonymous(dfd, path, header, body, fsync)
        else:
            tfd = opened_folder(str(tmp_dir), inodes[1])
            _write_named(dfd, path, tfd, header, body, fsync)
        return
    dfd = os.open(path.parent, _DIR_FLAGS)
    try:
        if tmp_dir is None or _same_folder(dfd, path.parent, Path(tmp_dir)):
            _write_anonymous(dfd, path, header, body, fsync)
        else:
            tfd = os.open(tmp_dir, _DIR_FLAGS)
            try:
                _write_named(dfd, path, tfd, header, body, fsync)
            finally:
                os.close(tfd)
    finally:
        os.close(dfd)


def opened_folder(folder: str, ino: int | None = None) -> int:
    """Descriptor of ``folder``, opened once per process, checked to be what ``folder`` names.

    ``O_DIRECTORY | O_NOFOLLOW`` (give the real path), then one ``lstat`` per call against
    ``ino`` (the run's record; None: the first call's). The inode, not the device: ``st_ino`` is
    the same on every node of a shared filesystem (NFS: the server's file id), ``st_dev`` is not.
    Raises OSError ``FOLDER_REPLACED``.
    """
    with _OPENING:
        fd, ident = _OPENED.get((folder, ino)) or (None, None)
        if fd is not None and os.fstat(fd).st_nlink == 0:  # removed: its inode may be reused
            os.close(fd)
            fd = None
        if fd is None:
            fd, ident = _OPENED[folder, ino] = _open_once(folder, ino)
    try:
        st = os.lstat(folder)
    except OSError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != ident:
        raise _replaced(folder)
    return fd


def _open_once(folder: str, ino: int | None) -> tuple[int, tuple[int, int]]:
    try:
        fd = os.open(folder, _DIR_FLAGS | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise _replaced(folder) from None
        raise
    st = os.fstat(fd)
    if ino is not None and st.st_ino != ino:
        os.close(fd)
        raise _replaced(folder)
    return fd, (st.st_dev, st.st_ino)


def _replaced(folder: str) -> OSError:
    return OSError(
        FOLDER_REPLACED,
        f"the output folder {folder} was replaced during the run (it is no longer the folder"
        " this run opened); stopped",
    )


def _same_folder(dfd: int, folder: Path, other: Path) -> bool:
    """Whether ``other`` is the folder open as ``dfd`` (``folder``)."""
    if other == folder:
        return True
    try:
        return os.path.samestat(os.fstat(dfd), os.stat(other))
    except OSError:
        return False


def _write_all(fd: int, header: bytes, body: np.ndarray, fsync: bool) -> None:
    with os.fdopen(fd, "wb", closefd=False) as f:
        f.write(header)
        f.write(body)
    if fsync:
        os.fsync(fd)


def _open_tmpfile(dfd: int, folder: Path) -> int:
    """Open an anonymous, linkable file in the folder open as ``dfd``."""
    try:
        return os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=dfd)
    except AttributeError:  # no O_TMPFILE on this platform
        raise OSError(
            errno.EOPNOTSUPP, f"{folder}: this system has no anonymous temporary files"
        ) from None
    except OSError as err:
        if err.errno in _NO_TMPFILE:
            raise OSError(
                err.errno,
                f"{folder}: the filesystem refuses anonymous temporary files (O_TMPFILE)",
            ) from None
        raise


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _link_fd(fd: int, dfd: int, name: str) -> None:
    """Name the anonymous file ``fd`` in folder ``dfd``; FileExistsError if the name is taken.

    ``AT_EMPTY_PATH`` needs Linux 6.10 (or CAP_DAC_READ_SEARCH), else ``/proc/self/fd`` (open(2)).
    """
    try:
        linkat = _libc().linkat
    except (OSError, AttributeError):  # no usable C library: the /proc way only
        linkat = None
    if linkat is not None:
        if linkat(fd, b"", dfd, os.fsencode(name), _AT_EMPTY_PATH) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), name)
        if err not in (errno.ENOENT, errno.EPERM, errno.EINVAL):
            raise OSError(err, os.strerror(err), name)
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd, follow_symlinks=True)


def _write_anonymous(dfd: int, path: Path, header: bytes, body: np.ndarray, fsync: bool) -> None:
    fd = _open_tmpfile(dfd, path.parent)
    try:
        _write_all(fd, header, body, fsync)
        for _ in range(3):
            try:
                _link_fd(fd, dfd, path.name)
                return
            except FileExistsError:
                # a broken file, a volume to overwrite, or the same volume written by a
                # duplicate task (same bytes): it goes, so that the folder holds one volume
                # fewer for a moment, never a partial one
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path.name, dir_fd=dfd)
        raise FileExistsError(errno.EEXIST, "another process keeps creating it", str(path))
    finally:
        os.close(fd)  # an unnamed file is freed here


def _write_named(
    dfd: int, path: Path, tfd: int, header: bytes, body: np.ndarray, fsync: bool
) -> None:
    tmp = f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fd = os.open(tmp, _NEW_FILE, 0o666, dir_fd=tfd)
        try:
            _write_all(fd, header, body, fsync)
        finally:
            os.close(fd)
        os.rename(tmp, path.name, src_dir_fd=tfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=tfd)
        raise


def anonymous_temporaries(folder: Path) -> str | None:
    """None if volumes can be written to ``folder`` through ``O_TMPFILE``, else why not.

    The probe links an anonymous file as ``.``, which the kernel refuses with EEXIST only once
    it has accepted the file: nothing gets a name.
    """
    try:
        dfd = os.open(folder, _DIR_FLAGS)
    except OSError as err:
        return f"cannot open {folder} ({err.strerror})"
    try:
        fd = _open_tmpfile(dfd, Path(folder))
    except OSError as err:
        os.close(dfd)
        return err.strerror or str(err)
    try:
        _link_fd(fd, dfd, ".")
    except FileExistsError:
        return None
    except OSError as err:
        return f"{folder}: cannot link an anonymous temporary file ({err.strerror})"
    finally:
        os.close(fd)
        os.close(dfd)
    return f"{folder}: linking an anonymous temporary file as '.' did not fail"


def probe_temporaries(folder: str, tmp_dir: str | None) -> str | None:
    """On a worker: None if it can write volumes to ``folder`` with ``tmp_dir``, else why not."""
    if not os.path.isdir(folder):
        return f"cannot see {folder}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write to {folder}"
    if tmp_dir is None or os.path.realpath(tmp_dir) == os.path.realpath(folder):
        return anonymous_temporaries(Path(folder))
    try:
        tfd = os.open(tmp_dir, _DIR_FLAGS | os.O_NOFOLLOW)
    except OSError as err:
        return f"cannot use {tmp_dir} ({err.strerror})"
    try:
        probe = f"probe.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        os.close(os.open(probe, _NEW_FILE, 0o600, dir_fd=tfd))
        os.unlink(probe, dir_fd=tfd)
        same_fs = os.fstat(tfd).st_dev == os.stat(folder).st_dev
    except OSError as err:
        return f"cannot write to {tmp_dir} ({err.strerror})"
    finally:
        os.close(tfd)
    if not same_fs:
        return f"{tmp_dir} is not on the filesystem of {folder}"
    return None


@dataclass(frozen=True)
class VolumeHeader:
    """What the header of a volume file says."""

    shape: tuple[int, int, int]
    mode: int
    voxel_size: float
    labels: list[str]
    size: int
    nsymbt: int = 0
    is_mrc: bool = True


def open_regular(path: Path, dir_fd: int | None = None) -> int:
    """Open ``path`` for reading if it is a regular file (ValueError if not), never via a link.

    ``lstat`` first (a FIFO or device named ``n_00001.mrc`` cannot hang a run), then
    ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat`` (the entry may have changed in between).
    """
    kind = file_kind(os.lstat(path, dir_fd=dir_fd).st_mode)
    if kind != "file":
        raise ValueError(f"{path} is {kind}, not a file")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a file")
    return fd


def read_header(path: Path, *, strict: bool = False, dir_fd: int | None = None) -> VolumeHeader:
    """Read the header of ``path`` (no data); raises ``ValueError`` or ``OSError`` if unreadable.

    ``strict``: mrcfile's strict checks (map ID, machine stamp, mode); else its permissive
    rules (a bad map ID clears ``is_mrc``, an unknown stamp means little-endian).
    """
    fd = open_regular(path, dir_fd)
    try:
        size = os.fstat(fd).st_size
        raw = os.pread(fd, HEADER_BYTES, 0)
    finally:
        os.close(fd)
    if len(raw) < HEADER_BYTES:
        raise ValueError(f"{path} is shorter than an MRC header")
    return parse_header(raw, size, strict=strict)


def parse_header(raw: bytes, size: int, *, strict: bool = False) -> VolumeHeader:
    """Interpret a 1024-byte MRC header as ``mrcfile.open`` does (see :func:`read_header`)."""
    first = np.frombuffer(raw, dtype=HEADER_DTYPE, count=1)[0]
    is_mrc = bytes(first["map"])[:3] == MAP_ID[:3]
    if strict and not is_mrc:
        raise ValueError("Map ID string not found - not an MRC file, or file is corrupt")
    try:
        order = mrcutils.byte_order_from_machine_stamp(first["machst"])
    except ValueError:
        if strict:
            raise
        order = "<"
    h = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(order), count=1)[0]
    mode = int(h["mode"])
    if strict:
        mrcutils.dtype_from_mode(mode)  # ValueError for a mode mrcfile cannot read
    mx = int(h["mx"])
    nlabl = min(max(int(h["nlabl"]), 0), MAX_LABELS)
    return VolumeHeader(
        shape=(int(h["nz"]), int(h["ny"]), int(h["nx"])),
        mode=mode,
        voxel_size=float(h["cella"]["x"]) / mx if mx else 0.0,
        labels=[bytes(lab).decode("ascii", "replace").strip() for lab in h["label"][:nlabl]],
        size=size,
        nsymbt=int(h["nsymbt"]),
        is_mrc=is_mrc,
    )


def header_is_complete(h: VolumeHeader, cubesize: int) -> bool:
    """Whether a (strictly read) header describes a whole float32 cube of side ``cubesize``."""
    n = cubesize
    return (
        h.shape == (n, n, n) and h.mode == 2 and h.nsymbt == 0 and h.size == HEADER_BYTES + 4 * n**3
    )


def is_complete(path: Path, cubesize: int, *, dir_fd: int | None = None) -> bool:
    """Whether the header and size (strict as ``mrcfile.open``) give a whole float32 cube."""
    try:
        return header_is_complete(read_header(path, strict=True, dir_fd=dir_fd), cubesize)
    except (OSError, ValueError):
        return False


def is_intact(path: Path, cubesize: int, labels: list[str], *, dir_fd: int | None = None) -> bool:
    """Full check: :func:`is_complete`, the expected ``labels``, finite data of mean 0, std 1."""
    try:
        h = read_header(path, strict=True, dir_fd=dir_fd)
        if not header_is_complete(h, cubesize) or h.labels[: len(labels)] != labels:
            return False
        data = read_volume(path, dir_fd=dir_fd)
    except (OSError, ValueError):
        return False
    if not np.all(np.isfinite(data)):
        return False
    flat = data.reshape(-1).astype(np.float64)
    return abs(flat.mean()) < 1e-3 and abs(flat.std() - 1.0) < 1e-3


def read_volume(path: Path, *, dir_fd: int | None = None) -> np.ndarray:
    """Read the data of a volume file, float32 (z, y, x); only a regular file is opened."""
    fd = open_regular(path, dir_fd)
    try:
        name = path if dir_fd is None else f"/proc/self/fd/{fd}"
        with mrcfile.open(name, permissive=True) as mrc:
            return np.asarray(mrc.data, dtype=np.float32).copy()
    finally:
        os.close(fd)


def write_spectrum(
    path: Path, spectrum: np.ndarray, labels: list[str], voxel_size: float = 1.0
) -> str:
    """Write a (kz, ky, kx) fftshifted ``spectrum`` as float32 MRC, atomically; return its digest.

    ``voxel_size``: the halves', angstroms (the Fourier pixel is ``1 / (N * voxel_size)``).
    """
    data = np.ascontiguousarray(spectrum, dtype=np.float32)
    check_spectrum(data)
    path = Path(path)
    write_volume(path, data, voxel_size if voxel_size > 0 else 1.0, labels, path.parent)
    return spectrum_digest(data)
