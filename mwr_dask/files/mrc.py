"""Reading and writing noise volumes as MRC files, atomically and without following links.

A volume is written to an anonymous temporary file (``O_TMPFILE``) in the output folder itself,
flushed, then linked into place under its name: it has no name until it is complete, so the
output folder only ever holds complete ``n_*.mrc`` files, and a killed writer leaves nothing
(the kernel frees the unnamed file). Where the filesystem refuses ``O_TMPFILE`` (NFS, older
overlay and FUSE filesystems), the caller gives a private folder on the same filesystem (the
hidden sibling of :mod:`mwr_dask.files.folder`) for a named temporary that is renamed into place.

A run writes through descriptors of the output folder and of the temporaries' folder, each
opened once per worker process (``O_NOFOLLOW``) and checked before every volume
(:func:`opened_folder`): a folder replaced during the run (by a link, in a parent that others
can write) stops the run rather than receiving volumes.

Existing entries are never opened unless they are regular files (``lstat``, then
``O_NOFOLLOW | O_NONBLOCK`` and ``fstat``): a FIFO or a device named ``n_00001.mrc`` cannot
hang a run, and a symbolic link is never followed.

The file is the 1024-byte header followed by the data. The header of a geometry (shape, voxel
size) is built once by mrcfile itself; each volume fills in only its statistics, computed with
the very numpy calls mrcfile uses, and its labels. The bytes are those that ``mrcfile.new`` and
``set_data`` would write, without the cost of opening an MRC object per file.

Headers are read with mrcfile's public header dtype and byte-order rules on the first 1 KiB
only (:func:`parse_header`): ``mrcfile.open(header_only=True)`` gives the same answers but
costs three times as much per file (the completeness check runs once per existing file on a
resume) and reads, allocating it first, the extended header a corrupt file may claim to be
gigabytes long.
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
#: ``errno`` of a volume refused because its folder was replaced during the run (it stops the
#: run); also what NFS says when a folder held open was removed on the server.
FOLDER_REPLACED = errno.ESTALE
_OPENING = threading.Lock()


def state_dir(folder: Path) -> Path:
    """Hidden sibling of the real ``folder`` (links resolved): ``.<name>.mwr-dask``.

    A name that would exceed NAME_MAX is shortened and completed with a hash of the full
    name, so that every folder has a sibling name the filesystem accepts.
    """
    real = Path(os.path.realpath(Path(folder).absolute()))
    raw = os.fsencode(real.name)
    name = b"." + raw + b".mwr-dask"
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(raw).hexdigest()[:16].encode()
        name = b"." + raw[:200] + b"~" + digest + b".mwr-dask"
    return real.parent / os.fsdecode(name)


@functools.lru_cache(maxsize=16)
def header_template(shape: tuple[int, ...], voxel_size: float) -> np.recarray:
    """Header of a float32 volume of ``shape`` as mrcfile writes it, without statistics or labels.

    Made once per geometry by ``mrcfile.new_mmap`` in a temporary folder (a sparse file: no
    data is written), so that its defaults, byte order, mode, dimensions and cell are
    mrcfile's own.
    """
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

    Statistics use mrcfile's own expressions (float32 mean and standard deviation), so that the
    header is the same, byte for byte.

    Raises
    ------
    ValueError
        More than 10 labels, or a label that is not printable ASCII of at most 80 characters.
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
    """Write ``data`` (float32, (z, y, x)) to ``path`` atomically.

    An existing entry at ``path`` (a broken file, or a volume to overwrite) is replaced; it
    is unlinked, never opened or followed.

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
    tmp_dir : pathlib.Path or None
        None, or the folder of ``path`` itself: an anonymous ``O_TMPFILE`` temporary in that
        folder, linked into place when complete (never a named temporary there). Another
        folder (on the same filesystem, private to the user): a named temporary there,
        renamed into place.
    fsync : bool
        Force the data to disk before the file gets its name, so that a node crash cannot
        leave a named but empty file.
    inodes : tuple, optional
        Inode numbers (or None) of the folder of ``path`` and of ``tmp_dir`` as the run
        recorded them: both are then reached through descriptors opened once per process and
        checked first (:func:`opened_folder`). Without, they are opened by path for this call.

    Raises
    ------
    OSError
        The write failed (disk full, quota, no ``O_TMPFILE`` on this filesystem, a folder
        replaced during the run: ``FOLDER_REPLACED``, ...); no temporary is left behind.
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

    The first call opens ``folder`` (``O_DIRECTORY | O_NOFOLLOW``: its last component may
    not be a link, so give the real path) and keeps it open for the life of the process;
    every call then checks with one ``lstat`` that ``folder`` still names that folder (same
    device and inode). ``ino`` is the inode number that the run recorded when it locked the
    folder (None: whatever the first call finds). The inode number, not the device: a
    folder's ``st_ino`` is the same on every node of a shared filesystem (NFS gives the
    server's file id), its ``st_dev`` is not; and while the run holds the folder open, no
    other folder of its filesystem can have that number.

    Raises
    ------
    OSError
        ``FOLDER_REPLACED``, one sentence: ``folder`` is no longer the folder this run opened.
    """
    with _OPENING:
        fd, ident = _open_once(folder, ino)
    try:
        st = os.lstat(folder)
    except OSError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != ident:
        raise _replaced(folder)
    return fd


@functools.cache
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
    """Give the anonymous file ``fd`` the name ``name`` in the folder open as ``dfd``.

    ``linkat(fd, "", ..., AT_EMPTY_PATH)`` (any user since Linux 6.10, with
    CAP_DAC_READ_SEARCH before), else ``linkat`` through ``/proc/self/fd`` (open(2)'s way).
    Raises ``FileExistsError`` if the name is taken.
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
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o666, dir_fd=tfd)
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

    Nothing gets a name in ``folder``: the probe opens an anonymous file and asks the kernel
    to link it as ``.``, which it refuses with EEXIST only once it has accepted the file.
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
    """On a worker: None if it can write volumes to ``folder`` with ``tmp_dir``, else why not.

    Nothing is written to ``folder``; with a separate ``tmp_dir`` a probe file is created
    and removed there (it must exist, on the filesystem of ``folder``).
    """
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
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(probe, flags, 0o600, dir_fd=tfd))
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
    """Open ``path`` for reading if it is a regular file, never following a link.

    ``lstat`` first (a device or FIFO is never opened), then ``O_NOFOLLOW | O_NONBLOCK``
    and ``fstat`` (the entry may have changed in between). With ``dir_fd``, ``path`` is
    relative to the folder open as ``dir_fd``.

    Raises
    ------
    ValueError
        ``path`` is not a regular file (FIFO, socket, device, folder, symbolic link).
    OSError
        It cannot be read.
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


def file_kind(mode: int) -> str:
    """``file`` for a regular file, else the kind in words: ``a FIFO``, ``a folder``, ..."""
    if stat.S_ISREG(mode):
        return "file"
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def read_header(path: Path, *, strict: bool = False, dir_fd: int | None = None) -> VolumeHeader:
    """Read the header of ``path`` (no data); raises ``ValueError`` or ``OSError`` if unreadable.

    Only regular files are opened (:func:`open_regular`), and only their first 1 KiB is read.
    With ``strict``, the header must pass the checks of mrcfile's default (strict) mode:
    map ID, machine stamp and a known data mode (``ValueError`` otherwise); without, a bad
    map ID only clears ``is_mrc`` and an unknown machine stamp means little-endian, as in
    mrcfile's permissive mode. With ``dir_fd``, ``path`` is relative to that folder.
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
    """Interpret a 1024-byte MRC header as mrcfile does (see :func:`read_header`).

    The checks are those ``mrcfile.open`` makes of a header (map ID, machine stamp, and in
    strict mode a known data mode), with mrcfile's own header dtype and functions.
    """
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
    """Cheap check that ``path`` is a whole float32 cube of side ``cubesize``.

    Accepts only what ``mrcfile.open`` opens in its default (strict) mode: a regular file
    whose header passes mrcfile's strict checks (map ID, machine stamp, mode), with shape,
    data mode, no extended header and the exact file size. Does not read the data. With
    ``dir_fd``, ``path`` is relative to the folder open as ``dir_fd``.
    """
    try:
        return header_is_complete(read_header(path, strict=True, dir_fd=dir_fd), cubesize)
    except (OSError, ValueError):
        return False


def is_intact(path: Path, cubesize: int, labels: list[str], *, dir_fd: int | None = None) -> bool:
    """Full check of a volume file: :func:`is_complete`, its labels, and all of its data.

    The labels must be ``labels`` (the provenance of the expected volume), and the data must
    be finite with mean 0 and standard deviation 1 (as every volume is written). With
    ``dir_fd``, ``path`` is relative to the folder open as ``dir_fd``.
    """
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
    """Read the data of a volume file, float32 (z, y, x); only a regular file is opened.

    With ``dir_fd``, ``path`` is relative to that folder, and the file opened is read (Linux).
    """
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
    """Write ``spectrum`` to ``path`` as a float32 MRC file, atomically; return its digest.

    Parameters
    ----------
    path : pathlib.Path
        Destination (replaced if it exists; a temporary file in the same folder is renamed).
    spectrum : numpy.ndarray
        (N, N, N), axes (kz, ky, kx), fftshifted (see the module's documentation).
    labels : list of str
        Up to 10 printable ASCII labels of at most 80 characters.
    voxel_size : float
        The halves' voxel size, angstroms, written to the header (the grid's Fourier pixel is
        ``1 / (N * voxel_size)``).
    """
    data = np.ascontiguousarray(spectrum, dtype=np.float32)
    check_spectrum(data)
    path = Path(path)
    write_volume(path, data, voxel_size if voxel_size > 0 else 1.0, labels, path.parent)
    return spectrum_digest(data)
