"""``inspect OUT`` of ``generate-noise --tomograms``: each folder against its own manifest row.

OUT holds one noise folder per tomogram (or ``mixed``) and the manifest
(:data:`~mwr_dask.noise.datasets.MANIFEST`). Each folder is inspected as any noise folder
(:func:`~mwr_dask.inspection.run.inspect_folder`: readable volumes, duplicates, its spectrum
against the tilt range its labels record), and its volumes' labels are checked against the
tomogram's row: the label naming its noise (``sha=`` of its scheme, ``tilt=``, ``schemes=``,
``spectrum=``), its seed, and the number of volumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mwr_dask.inspection.records import FolderReport
from mwr_dask.inspection.run import inspect_folder
from mwr_dask.noise.datasets import read_manifest


@dataclass
class DatasetReport:
    """What ``inspect OUT`` found: one entry (row, folder report, row problems) per folder."""

    folder: Path
    head: dict
    entries: list[tuple[dict, FolderReport | None, list[str]]]

    @property
    def ok(self) -> bool:
        """True when every folder is fine and agrees with its row."""
        return all(report is not None and report.ok and not own for _, report, own in self.entries)

    def to_dict(self) -> dict:
        """JSON-ready report: the dataset, and per tomogram its folder's report and problems."""
        return {
            "dataset": {k: str(v) for k, v in self.head.items()},
            "folder": str(self.folder),
            "ok": self.ok,
            "exit_code": 0 if self.ok else 1,
            "tomograms": [
                {
                    "name": str(row["rlnTomoName"]),
                    "folder": str(row["mwrNoiseFolder"]),
                    "problems": own + (report.problems if report else []),
                    "warnings": report.warnings if report else [],
                    "report": report.to_dict() if report else None,
                }
                for row, report, own in self.entries
            ],
        }

    def text(self) -> str:
        """Return the report for people: one line per folder, then every problem."""
        lines = [
            f"Dataset     {self.head.get('Dataset')} ({self.head.get('DatasetKind')}),"
            f" seed {self.head.get('Seed')}: {len(self.entries)} folder(s) in"
            f" {self.folder}"
        ]
        for row, report, own in self.entries:
            name, problems = row["mwrNoiseFolder"], own + (report.problems if report else [])
            count = report.summary["count"] if report else 0
            verdict = "OK" if not problems else f"FAILED ({len(problems)} problems)"
            lines.append(
                f"  {name}: {count} volumes, tilts {row['mwrTilts']}, {row['mwrLabel']}: {verdict}"
            )
            lines += [f"problem: {name}: {p}" for p in problems]
            lines += [f"warning: {name}: {w}" for w in (report.warnings if report else [])]
        lines.append("OK: every folder agrees with its tomogram." if self.ok else "FAILED.")
        return "\n".join(lines)


def row_problems(row: dict, head: dict, report: FolderReport) -> list[str]:
    """How a folder's volumes disagree with its manifest row, one sentence each."""
    expected = (str(row["mwrLabel"]), f"seed={row['mwrSeed']}")
    out = []
    for token in expected:
        wrong = [r.name for r in report.records if token not in " ".join(r.labels).split()]
        if wrong:
            out.append(
                f"{len(wrong)} of {len(report.records)} volumes (e.g. {wrong[0]}) do not carry"
                f" {token} of its tomogram {row['rlnTomoName']}: they were made otherwise"
            )
    wanted = int(head.get("Volumes", 0))
    if len(report.records) < wanted:
        out.append(
            f"it holds {len(report.records)} volumes, the run asked for {wanted}: rerun the"
            " same generate-noise command to finish it"
        )
    return out


def inspect_dataset(folder: Path, client=None, *, workers: int | None = None) -> DatasetReport:
    """Inspect every folder of a ``--tomograms`` OUT (on ``client``, or in this process).

    Raises
    ------
    mwr_dask.noise.datasets.DatasetError
        The manifest cannot be read (or there is none).
    """
    folder = Path(folder).absolute()
    found = read_manifest(folder)
    if found is None:
        from mwr_dask.noise.datasets import MANIFEST, DatasetError

        raise DatasetError(f"{folder} holds no {MANIFEST}: not an OUT of --tomograms.")
    head, rows = found
    entries = []
    for row in rows:
        path = folder / str(row["mwrNoiseFolder"])
        if not path.is_dir():
            entries.append((row, None, [f"its folder {path} is missing"]))
            continue
        report = inspect_folder(path, client, workers=workers)
        entries.append((row, report, row_problems(row, head, report)))
    return DatasetReport(folder, head, entries)
