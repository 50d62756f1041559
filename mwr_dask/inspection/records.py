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

    ``size`` in bytes; ``shape`` (z, y, x); ``voxel_size`` (x), angstroms; ``digest``: SHA-256
    of dtype, shape and data; ``count``, ``mean``, ``m2``: voxels, mean and sum of squared
    deviations of the finite data.
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

    ``inspect`` sums the spectra per scheme, so each is compared with its own range; else None.
    """
    return next((label for label in labels if label.startswith("scheme=")), None)


def is_cube(shape: tuple[int, ...] | None) -> bool:
    """Return True for a 3-D shape with equal sides of at least 2."""
    return shape is not None and len(shape) == 3 and shape[0] == shape[1] == shape[2] > 1


@dataclass
class FolderReport:
    """Everything ``mwr-dask inspect`` reports about a folder; ``problems`` give exit status 1."""

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
