"""The plain records that flow from the workers to the rules, and the folder's report.

:class:`FileRecord` is what a worker learns about one file (a few kilobytes, never a volume);
:class:`FolderReport` is what the rules make of all of them. Neither imports Dask or mrcfile,
so rules and renderers can be tested on records made by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from mwr_dask.inspection.spectrum import SpectrumAnalysis
    from mwr_dask.noise.source import NoiseSource


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
        Values at :func:`~mwr_dask.inspection.reading.sample_positions`, float32.
    sketch : numpy.ndarray or None
        :func:`~mwr_dask.inspection.reading.value_sketch` of the data.
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


def scheme_key(labels: list[str]) -> str | None:
    """Return the label naming a volume's own tilt scheme (``scheme=j/K tilts=.. sha=..``).

    Volumes of a ``generate-noise --tilt-file ...`` run carry it (see
    :meth:`~mwr_dask.noise.source.NoiseSource.labels`); ``inspect`` sums the spectra of the volumes
    that share it, so that each scheme of a mixture is compared with its own range. None for
    volumes without one (a regular range, a measured spectrum, another program's files).
    """
    return next((label for label in labels if label.startswith("scheme=")), None)


def is_cube(shape: tuple[int, ...] | None) -> bool:
    """Return True for a 3-D shape with equal sides of at least 2."""
    return shape is not None and len(shape) == 3 and shape[0] == shape[1] == shape[2] > 1


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
    expected : NoiseSource or None
        Parameters the labels of most volumes record.
    """

    folder: str
    records: list[FileRecord]
    others: list[str]
    summary: dict
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    spectrum: SpectrumAnalysis | None = None
    expected: NoiseSource | None = None

    def describe_labels(self) -> str:
        """Say what the labels of most volumes record; a tilt-file mixture by its schemes.

        A mixture's :attr:`expected` spans the union of its schemes' ranges on an averaged
        grid (``-60:60:2.93``), which no scheme has: its schemes' ranges are named instead.
        """
        e, mixture = self.expected, self.summary.get("tilt_schemes")
        text = e.describe()
        if mixture:
            k = mixture["record"].partition(":")[0]
            ranges = ", ".join(f"{g['minangle']:g}..{g['maxangle']:g}" for g in mixture["groups"])
            text = text.replace(
                f"tilts {e.tilt} deg", f"tilt-file mixture of {k} schemes (tilts {ranges} deg)"
            )
        return text

    @property
    def ok(self) -> bool:
        """True when nothing is broken, duplicated or inconsistent."""
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-ready report (non-finite numbers are made null by :func:`~.render.render_json`)."""
        return {
            "folder": self.folder,
            "ok": self.ok,
            "exit_code": 0 if self.ok else 1,
            **self.summary,
            "problems": self.problems,
            "warnings": self.warnings,
        }
