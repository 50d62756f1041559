"""What an output folder already holds, what may be added to it, and the run's lock on it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from mwr_dask.files.mrc import anonymous_temporaries, file_kind, read_header, state_dir
from mwr_dask.noise.source import (
    NAME_PATTERN,
    NoiseSource,
    parse_labels,
    source_from_labels,
    volume_name,
)

#: Set to 1 to write named temporaries in the hidden sibling even where O_TMPFILE works.
NO_TMPFILE_ENV = "MWR_DASK_NO_TMPFILE"


@dataclass
class FolderState:
    """Contents of an output folder.

    ``others``: entries that are not ``n_*.mrc`` (IsoNet would open them as volumes);
    ``irregular``: ``(name, kind)`` of ``n_*.mrc`` entries that are not regular files, never
    opened; ``unlabelled``: MRC files without mwr-dask labels (foreign volumes).
    """

    indices: list[int] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    recorded: NoiseSource | None = None
    cubesizes: set[int] = field(default_factory=set)
    irregular: list[tuple[str, str]] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    params_seen: Counter = field(default_factory=Counter)
    recorded_schemes: str = ""


def scan(folder: Path, *, headers: int | None = None) -> FolderState:
    """List ``folder`` (never following links) and read the headers of its volumes.

    ``headers`` caps the headers read (first, middle and last then). A file that is not an
    MRC file at all (truncated, garbage) is neither recorded nor foreign: the run replaces it.
    """
    state = FolderState()
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return state
    for entry in sorted(entries, key=lambda e: e.name):
        match = NAME_PATTERN.match(entry.name)
        if not match:
            state.others.append(entry.name)
            continue
        try:
            kind = file_kind(entry.stat(follow_symlinks=False).st_mode)
        except OSError:
            continue
        if kind == "file":
            state.indices.append(int(match.group(1)))
        else:
            state.irregular.append((entry.name, kind))
    state.indices.sort()
    picks = range(len(state.indices))
    if headers is not None and state.indices:
        k = len(state.indices)
        picks = sorted({0, k // 2, k - 1})[:headers]
    for pick in picks:
        name = volume_name(state.indices[pick])
        try:
            header = read_header(Path(folder) / name)
        except (OSError, ValueError):
            continue
        if not header.is_mrc:  # garbage or a corrupt map ID: the run replaces it
            continue
        recorded = source_from_labels(header.labels)
        if recorded is None:
            state.unlabelled.append(name)
            continue
        schemes = parse_labels(header.labels).get("schemes", "")
        state.cubesizes.add(header.shape[-1])
        state.params_seen[recorded, schemes] += 1
        if state.recorded is None:
            state.recorded, state.recorded_schemes = recorded, schemes
    return state


def conflicts(recorded: NoiseSource, wanted: NoiseSource, recorded_schemes: str = "") -> list[str]:
    """Differences between the parameters a folder records and those of a new run.

    Tilt schemes compare by ``recorded_schemes`` (``schemes=K:digest``, '' for a range), doses
    of a regular range to the labels' 0.25 e/A^2.
    """
    out = []
    if recorded.cubesize != wanted.cubesize:
        out.append(f"cube size {wanted.cubesize} (folder has {recorded.cubesize})")
    if recorded.mode != wanted.mode:
        out.append(f"mode {wanted.mode} (folder has {recorded.mode})")
    spectra = [p.spectrum.digest if p.spectrum is not None else None for p in (recorded, wanted)]
    if recorded.mode == wanted.mode == 3 and spectra[0] != spectra[1]:
        out.append(f"spectrum {spectra[1]} (folder has {spectra[0]})")
    dosed = recorded.dose_weighting != "none"
    wanted_schemes = wanted.mixture_record(dosed)  # in the folder's terms: with doses if it has
    if recorded.mode == 3 or wanted.mode == 3:
        pass  # a measured spectrum has no tilts
    elif recorded_schemes or wanted_schemes:
        if recorded_schemes != wanted_schemes:
            kind = "tilt schemes and doses" if dosed else "tilt schemes"
            mine = f"{kind} {wanted_schemes}" if wanted_schemes else f"tilts {wanted.tilt}"
            theirs = f"{kind} {recorded_schemes}" if recorded_schemes else recorded.tilt
            out.append(f"{mine} (folder has {theirs})")
    elif recorded.mode == wanted.mode and recorded.tilt != wanted.tilt:
        # The step only matters for mode 1; mode 2 records it but does not use it.
        same_range = (recorded.minangle, recorded.maxangle) == (wanted.minangle, wanted.maxangle)
        if wanted.mode == 1 or not same_range:
            out.append(f"tilts {wanted.tilt} (folder has {recorded.tilt})")
    if recorded.seed != wanted.seed:
        out.append(f"seed {wanted.seed} (folder has {recorded.seed})")
    if recorded.voxel_size != wanted.voxel_size:
        out.append(f"voxel size {wanted.voxel_size:g} (folder has {recorded.voxel_size:g})")
    if recorded.filter_spec != wanted.filter_spec:
        out.append(f"{wanted.filter_spec.label()} (folder has {recorded.filter_spec.label()})")
    if recorded.dose_label != wanted.dose_label:
        out.append(f"{wanted.dose_label} (folder has {recorded.dose_label})")
    elif dosed and not (recorded_schemes or wanted_schemes) and recorded.doses != wanted.doses:
        from mwr_dask.noise.dose import quantized

        if quantized(recorded.doses or ()) != quantized(wanted.doses or ()):
            out.append("other doses per tilt (the folder's volumes record theirs)")
    return out


class FolderError(RuntimeError):
    """The output folder cannot be used as asked; the message is one sentence."""


def folder_problems(folder: Path, state: FolderState, params: NoiseSource) -> list[str]:
    """Why the volumes of ``params`` may not be added to ``folder``, one reason each."""
    problems = []
    for (recorded, schemes), count in sorted(state.params_seen.items(), key=lambda kv: -kv[1]):
        found = conflicts(recorded, params, schemes)
        if found:
            many = f" ({count} volumes)" if len(state.params_seen) > 1 else ""
            problems.append("; ".join(found) + many)
    if state.unlabelled:
        k = len(state.unlabelled)
        problems.append(
            f"{k} volume{'s' * (k != 1)} without mwr-dask labels (e.g."
            f" {state.unlabelled[0]}; written by IsoNet v1 or another program)"
        )
    for name, kind in state.irregular[:3]:
        problems.append(f"{name} is {kind}, not a file")
    if len(state.irregular) > 3:
        problems.append(f"{len(state.irregular) - 3} more n_*.mrc entries that are not files")
    return problems


def resolve_params(
    folder: Path, wanted: NoiseSource, *, seed_given: bool, force: bool, fresh_seed: int
) -> tuple[NoiseSource, FolderState]:
    """Parameters of the run: the folder's recorded seed unless one is given, checked for conflicts.

    ``force`` accepts conflicts, foreign volumes and entries that are not files; ``fresh_seed``
    is used when none is given and the folder records none.
    """
    state = scan(folder)
    seed = wanted.seed
    if not seed_given:
        seed = state.recorded.seed if state.recorded is not None else fresh_seed
    params = replace(wanted, seed=seed)
    if not force:
        problems = folder_problems(folder, state, params)
        if problems:
            raise FolderError(
                f"{folder} holds entries that this run may not mix with its volumes: "
                + "; ".join(problems)
                + ". Use another folder, or --force to mix them."
            )
    return params, state


def missing_count(state: FolderState, start: int, count: int) -> int:
    """Volumes of ``start .. start + count - 1`` that have no file yet."""
    have = {i for i in state.indices if start <= i < start + count}
    return count - len(have)


#: Largest block counted per file: a larger ``f_frsize`` is a transfer size (NFS reports its
#: ``wsize``, up to 1 MiB) or a block split into sub-blocks (GPFS), not what a file takes.
MAX_BLOCK = 64 * 2**10
#: Directory entries one filesystem block holds, at least (ext4: about 200 of ``n_*.mrc``).
ENTRIES_PER_BLOCK = 64


def disk_bytes(file_bytes: int, files: int, block: int) -> int:
    """Bytes that ``files`` new files of ``file_bytes`` bytes take on a filesystem.

    Whole blocks of ``block`` bytes (``f_frsize``), plus one per 1024 (an ext2/3 indirect
    block maps 1024 blocks) and one per ``ENTRIES_PER_BLOCK`` files for the directory.
    """
    block = min(max(block, 1), MAX_BLOCK)
    blocks = -(-file_bytes // block)
    return (files * (blocks + blocks // 1024) + -(-files // ENTRIES_PER_BLOCK)) * block


_SUBDIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _own_folder(parent_fd: int, name: str, shown: Path) -> int:
    """Create (0700) or open folder ``name`` in ``parent_fd``: the user's own, not a link."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as err:
        raise FolderError(f"cannot create {shown}: {err.strerror}.") from None
    try:
        fd = os.open(name, _SUBDIR_FLAGS, dir_fd=parent_fd)
    except OSError as err:
        try:
            kind = file_kind(os.lstat(name, dir_fd=parent_fd).st_mode)
        except OSError:
            kind = err.strerror
        raise FolderError(
            f"{shown} is {kind}, not a folder of yours; mwr-dask will not use it (remove it"
            " if you did not make it)."
        ) from None
    st = os.fstat(fd)
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"belongs to {_user(st.st_uid)}, not to you"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = "can be written by other users"
    if problem:
        os.close(fd)
        raise FolderError(
            f"{shown} {problem}; mwr-dask will not use it (remove it if you did not make it)."
        )
    os.fchmod(fd, 0o700)
    return fd


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"uid {uid}"


class Sibling:
    """The hidden sibling ``.<folder>.mwr-dask`` of the real folder, made and used safely.

    Reached only through checked descriptors, so another user who can write the parent cannot
    redirect what mwr-dask deletes or writes there.
    """

    def __init__(self, real_folder: Path):
        self.path = state_dir(real_folder)
        self.parent_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fds: dict[str, int] = {}
        try:
            self.fd = _own_folder(self.parent_fd, self.path.name, self.path)
        except BaseException:
            os.close(self.parent_fd)
            raise
        self.lock_fd: int | None = None

    def subfolder(self, name: str) -> Path:
        """Create or open ``name`` inside (the user's own, 0700) and return its path."""
        if name not in self.fds:
            self.fds[name] = _own_folder(self.fd, name, self.path / name)
        return self.path / name

    def clean(self, name: str) -> None:
        """Remove the files left in subfolder ``name`` by a killed run (links not followed)."""
        fd = self.fds[name]
        for entry in os.listdir(fd):
            with contextlib.suppress(OSError):
                if not stat.S_ISDIR(os.lstat(entry, dir_fd=fd).st_mode):
                    os.unlink(entry, dir_fd=fd)

    def lock(self, shown: Path) -> None:
        """Hold an ``flock`` on ``lock`` inside, with who holds it written in it."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open("lock", flags, 0o600, dir_fd=self.fd)
        except OSError as err:
            raise FolderError(f"cannot use {self.path / 'lock'}: {err.strerror}.") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FolderError(f"{self.path / 'lock'} is not a file; remove it.")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise FolderError(_busy(holder or "another process", shown)) from None
        self.lock_fd = fd
        with contextlib.suppress(OSError):  # who holds it is a courtesy: a full disk is fine
            os.ftruncate(fd, 0)
            os.pwrite(fd, _me().encode(), 0)

    def close(self) -> None:
        """Remove what is empty or ours (the lock while still held), close every descriptor."""
        for name, fd in self.fds.items():
            os.close(fd)
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=self.fd)
        if self.lock_fd is not None:
            # removed while still held, so a run that opened it earlier still fails to lock it
            with contextlib.suppress(OSError):
                os.unlink("lock", dir_fd=self.fd)
            os.close(self.lock_fd)
        os.close(self.fd)
        with contextlib.suppress(OSError):
            os.rmdir(self.path.name, dir_fd=self.parent_fd)
        os.close(self.parent_fd)


def _me() -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"pid {os.getpid()} on {socket.gethostname()} since {since}"


def _busy(holder: str, folder: Path) -> str:
    return (
        f"another mwr-dask run ({holder}) is writing to {folder}; wait for it to finish, or"
        " stop it."
    )


def lock_holder(st: os.stat_result) -> str:
    """Who holds an ``flock`` on the file of ``st`` on this host (from /proc/locks)."""
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        words = line.split()
        if "->" in words or "FLOCK" not in words or key not in words:
            continue
        pid = words[words.index(key) - 1]
        return f"pid {pid} on {socket.gethostname()}{_started(pid)}"
    return "another process"


def _started(pid: str) -> str:
    """`` since <time>`` a process started (Linux), or nothing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return ""
    started = boot + ticks / os.sysconf("SC_CLK_TCK")
    return " since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))


def _tmpfile_disabled() -> bool:
    return os.environ.get(NO_TMPFILE_ENV, "").strip().lower() not in ("", "0", "false", "no")


class Locked(NamedTuple):
    """The output folder a run locked, as its workers reach it (paths with links resolved)."""

    #: The real output folder, and where temporaries go (the folder itself for O_TMPFILE).
    folder: Path
    tmp: Path
    #: ``st_ino`` of both as opened here: the same on every node of a shared filesystem.
    inodes: tuple[int, int]


@contextmanager
def folder_lock(folder: Path, *, sibling: bool = False) -> Iterator[Locked]:
    """Create ``folder``, hold the run lock on it, and yield it with where temporaries go.

    An ``flock`` on the real folder, released by the kernel even on SIGKILL; where the
    filesystem refuses it on a directory (NFS, Lustre without ``-o flock``), a file in the
    hidden sibling. ``tmp`` is the folder itself (``O_TMPFILE``) or, where refused or with
    ``MWR_DASK_NO_TMPFILE=1``, ``.<folder>.mwr-dask/tmp`` on the same filesystem. Also yields
    both folders' inode numbers for :func:`mwr_dask.files.mrc.opened_folder`.
    """
    folder = Path(folder).absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FolderError(f"{folder} exists and is not a folder.") from None
    except OSError as err:
        raise FolderError(f"cannot create {err.filename or folder}: {err.strerror}.") from None
    with contextlib.ExitStack() as stack:
        try:
            dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise FolderError(f"cannot open {folder}: {err.strerror}.") from None
        stack.callback(os.close, dfd)
        st = os.fstat(dfd)
        real = Path(os.path.realpath(folder))
        side: Sibling | None = None

        def open_sibling() -> Sibling:
            nonlocal side
            if side is None:
                side = Sibling(real)
                stack.callback(side.close)
            return side

        try:
            fcntl.flock(dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderError(_busy(lock_holder(st), folder)) from None
        except OSError:  # no flock on directories here: a lock file beside the folder
            open_sibling().lock(folder)
        why = "disabled by MWR_DASK_NO_TMPFILE" if _tmpfile_disabled() else None
        why = why or anonymous_temporaries(folder)
        tmp, tmp_ino = real, st.st_ino
        if why is not None:
            if os.fstat(open_sibling().fd).st_dev != st.st_dev:
                raise FolderError(
                    f"{folder} is on another filesystem than {real.parent} (a mount point)"
                    " and that filesystem refuses anonymous temporary files (O_TMPFILE), so"
                    " volumes cannot be written atomically there; use a subfolder of it."
                )
            tmp = side.subfolder("tmp")
            side.clean("tmp")
            tmp_ino = os.fstat(side.fds["tmp"]).st_ino
        if sibling:
            open_sibling()
        yield Locked(real, tmp, (st.st_ino, tmp_ino))
