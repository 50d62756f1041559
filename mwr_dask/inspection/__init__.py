"""``mwr-dask inspect``: check a noise folder, in parallel with Dask.

Modules, in the order data flows through them:

- :mod:`.reading` (worker side): open regular files only (never through a link), validate,
  hash, moments, sample, sketch and slice spectrum of each volume; small records back;
- :mod:`.records`: :class:`FileRecord` and :class:`FolderReport`, plain data;
- :mod:`.duplicates`: exact and near-duplicate search on the records;
- :mod:`.rules`: the folder rules, small named functions from :class:`Facts` to
  :class:`Found`, applied in the order of :data:`RULES`;
- :mod:`.render`: the report as text and as strict JSON;
- :mod:`.run`: :func:`inspect_folder` on a Dask client (or in this process);
- beside them: :mod:`.spectrum` (the averaged kx-kz spectrum and its analysis),
  :mod:`.filtered` and :mod:`.measured` (a folder against a filter's or a measured spectrum),
  :mod:`.tomogram` (one tomogram's tilt range), :mod:`.plot` (the pictures).
"""

from mwr_dask.inspection.records import FileRecord, FolderReport
from mwr_dask.inspection.render import render_json, render_text
from mwr_dask.inspection.rules import RULES, Facts, Found, Rule, evaluate
from mwr_dask.inspection.run import inspect_folder, scan_folder, workers_missing_folder

__all__ = [
    "RULES",
    "Facts",
    "FileRecord",
    "FolderReport",
    "Found",
    "Rule",
    "evaluate",
    "inspect_folder",
    "render_json",
    "render_text",
    "scan_folder",
    "workers_missing_folder",
]
