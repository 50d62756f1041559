"""A lab's dataset, read from the files the programs write: one tilt scheme per tomogram.

:func:`read_dataset` reads a RELION 5 or IsoNet ``tomograms.star``, or a folder of Warp
``.xml``/``.tomostar``, AreTomo3 ``.aln`` or IMOD tilt-series folders (the fields each gives:
docs/datasets.md) into a :class:`Dataset` of :class:`Tomogram`. Pure: no Dask, no CLI;
problems raise :class:`DatasetError`, one sentence.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from mwr_dask.noise.schemes import TiltScheme, TiltSchemeError, View
from mwr_dask.noise.source import NoiseSource
from mwr_dask.noise.tiltfiles import (
    as_number,
    column,
    read_text,
    read_tilt_file,
    star_blocks,
    star_kind,
)

#: The manifest's name in OUT, and its two data blocks.
MANIFEST = "tomograms_noise.star"
#: The one folder of ``--mix``.
MIXED = "mixed"
#: Kinds of dataset.
KINDS = {
    "relion5": "RELION 5 tomograms.star",
    "isonet": "IsoNet tomograms.star",
    "warp": "Warp/WarpTools folder",
    "aretomo3": "AreTomo3 folder",
    "imod": "IMOD/etomo folder",
}
_HALVES = ("rlnTomoReconstructedTomogramHalf1", "rlnTomoReconstructedTomogramHalf2")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one sentence naming the file."""


@dataclass(frozen=True)
class Tomogram:
    """One tomogram of a dataset: its tilt scheme and what else the dataset knows of it.

    ``name`` (``_rlnTomoName``, the file's stem) names its noise folder; ``voxel_size`` is in
    angstroms; ``filtering`` holds NoiseSource's filter fields from IMOD's ``tilt.com``.
    """

    name: str
    source: str
    scheme: TiltScheme
    voxel_size: float | None = None
    halves: tuple[Path, Path] | None = None
    filtering: dict = field(default_factory=dict, compare=False)

    def noise_source(self, seed: int, fields: dict) -> NoiseSource:
        """Return its NoiseSource, seeded with ``seed``.

        ``fields`` (NoiseSource's names; None: not given) override its scheme, filter, voxel.
        """
        given = {k: v for k, v in fields.items() if v is not None}
        own: dict = {"voxel_size": self.voxel_size} if self.voxel_size else {}
        if "filter" not in given and given.get("mode", 1) == 1 and "spectrum" not in given:
            own.update(self.filtering)
        if "spectrum" not in given:
            own["tilt_schemes"] = (self.scheme,)
        return NoiseSource(**{**own, **given, "seed": seed})

    def summary(self) -> tuple[str, str, str]:
        """Return views used/excluded, range and filter: columns of the ``--dry-run`` table."""
        s = self.scheme
        f = self.filtering
        text = f.get("filter", "none")
        if "radial" in f:
            text += f" {f['radial'][0]:g},{f['radial'][1]:g}"
        if "sirt_iterations" in f:
            text += f" x{f['sirt_iterations']}"
        return f"{len(s.used)}/{len(s.excluded)}", f"{s.minangle:g} .. {s.maxangle:g}", text


@dataclass(frozen=True)
class Dataset:
    """The tomograms of a dataset file or folder, in its order, names unique."""

    path: Path
    kind: str
    tomograms: tuple[Tomogram, ...]
    notes: tuple[str, ...] = ()

    def select(self, only: list[str] | None = None, exclude: list[str] | None = None) -> Dataset:
        """Return the tomograms named in ``only`` (all if None) minus those in ``exclude``."""
        names = [t.name for t in self.tomograms]
        unknown = [n for n in (only or []) + (exclude or []) if n not in names]
        if unknown:
            raise DatasetError(
                f"Dataset {self.path}: no tomogram named {', '.join(unknown[:5])} (it has"
                f" {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})."
            )
        kept = [t for t in self.tomograms if (not only or t.name in only)]
        kept = [t for t in kept if t.name not in (exclude or [])]
        if not kept:
            raise DatasetError(f"Dataset {self.path}: no tomogram left after the selection.")
        return Dataset(self.path, self.kind, tuple(kept), self.notes)


def _fail(path: Path, message: str) -> DatasetError:
    return DatasetError(f"Dataset {path}: {message}.")


def tomogram_seed(seed: int, name: str) -> int:
    """Seed of tomogram ``name``'s noise: 128 bits of sha256("mwr-dask tomogram", seed, name).

    Independent of the other rows, so a folder does not change when rows are added.
    """
    data = f"mwr-dask tomogram\0{seed}\0{name}".encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:16], "big")


def range_scheme(tilt_min: float, tilt_max: float, step: float, source: str) -> TiltScheme:
    """Return the tilt scheme of an IsoNet row: ``tilt_min`` .. ``tilt_max`` every ``step``.

    IsoNet2 (``data_sequence.py``, ``missing_wedge.mw2D``) keeps directions atan(kz/kx) in
    (min, max), so its numbers follow IMOD's .tlt (sign -1; docs/datasets.md). ``tilt_max`` is
    added where the grid misses it: the row names the last tilt of the series.
    """
    from mwr_dask.noise.geometry import tilt_angles

    angles = [float(a) for a in tilt_angles(tilt_min, tilt_max, step)]
    if tilt_max - angles[-1] > 1e-6:
        angles.append(float(tilt_max))
    views = tuple(View(i + 1, a) for i, a in enumerate(angles))
    return TiltScheme(views, source=source, format="isonet2", sign=-1)


# ------------------------------------------------------------------------------ reading


def read_dataset(
    path: Path | str,
    *,
    all_views: Path | str | None = None,
    invert: bool = False,
    anglestep: float = 2.0,
) -> Dataset:
    """Read a dataset file or folder into one :class:`Tomogram` per tomogram.

    ``all_views``: every view of each series where RELION and Warp ``.tomostar`` drop the
    excluded ones (RELION's Import ``tilt_series.star``, or a folder of ``<name>*.mdoc``);
    ``anglestep``: degrees, for IsoNet rows.
    """
    path = Path(path).absolute()
    if not path.exists():
        raise _fail(path, "does not exist")
    try:
        if path.is_dir():
            dataset = _read_folder(path, all_views, invert)
        else:
            blocks = star_blocks(path, "Dataset")
            kind = star_kind(blocks)
            if kind == "tilt-series list":
                dataset = _read_relion(path, blocks, all_views, invert)
            elif kind == "isonet":
                dataset = _read_isonet(path, blocks, invert, anglestep)
            elif kind == "particles":
                raise _fail(path, "is a STAR file of particles, not a list of tomograms")
            else:
                raise _fail(
                    path,
                    "lists no tomograms (no _rlnTomoTiltSeriesStarFile, no"
                    " _rlnTiltMin/_rlnTiltMax): give a tilt series to --tilt-file",
                )
    except TiltSchemeError as err:
        raise DatasetError(str(err)) from None
    names = [t.name for t in dataset.tomograms]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _fail(path, f"names {', '.join(twice[:5])} more than once: names make the folders")
    bad = [n for n in names if not _folder_name_ok(n)]
    if bad:
        raise _fail(path, f"has the name {bad[0]!r}, which cannot be a folder name")
    return dataset


def _folder_name_ok(name: str) -> bool:
    return (
        bool(re.fullmatch(r"[^/\\\0]+", name))
        and not name.startswith(".")
        and (name not in (MANIFEST, MIXED))
    )


def _rows(path: Path, blocks: dict, key: str):
    """Return the rows of the one loop of ``blocks`` with column ``key``, as dicts."""
    found = [b for b in blocks.values() if column(b, key) is not None]
    if len(found) != 1:
        raise _fail(path, f"has {len(found)} loops with _{key}, 1 expected")
    return found[0].to_dict("records")


def project_directory(star: Path, relative: list[str]) -> tuple[Path, str]:
    """RELION's project directory for a STAR file, and how it was found.

    RELION writes paths relative to it, not to the STAR file's folder (docs/datasets.md).
    """
    above = [star.parent, *star.parent.parents]
    for folder in above:
        if (folder / "default_pipeline.star").is_file():
            return folder, "it holds default_pipeline.star"
    counts = [sum((folder / r).exists() for r in relative) for folder in above]
    if max(counts) > 0:
        best = above[counts.index(max(counts))]
        return best, f"the folder above {star.name} from which its paths exist"
    if re.fullmatch(r"job\d+", star.parent.name):
        return star.parent.parent.parent, "RELION's layout <project>/<job type>/jobNNN"
    return star.parent, "the star file's folder"


def _read_relion(path: Path, blocks: dict, all_views, invert: bool) -> Dataset:
    rows = _rows(path, blocks, "rlnTomoTiltSeriesStarFile")
    rel = [str(r["rlnTomoTiltSeriesStarFile"]) for r in rows]
    project, how = project_directory(path, rel)
    missing = [r for r in rel if not (project / r).is_file()]
    if missing:
        raise _fail(
            path,
            f"{len(missing)} of its {len(rel)} tilt-series files are missing"
            f" from the project directory {project} ({how}): "
            + ", ".join(missing[:3])
            + (", ..." if len(missing) > 3 else ""),
        )
    full = _full_series(all_views, project) if all_views is not None else {}
    tomograms = []
    hands = set()
    for row, ts in zip(rows, rel, strict=True):
        name = str(row.get("rlnTomoName", Path(ts).stem))
        pixel = as_number(row.get("rlnTomoTiltSeriesPixelSize"))
        binning = as_number(row.get("rlnTomoTomogramBinning"))
        halves = [row.get(h) for h in _HALVES]
        scheme = read_tilt_file(project / ts, invert=invert, all_views=full.get(name))
        hands.add(row.get("rlnTomoHand"))
        tomograms.append(
            Tomogram(
                name,
                str(project / ts),
                scheme,
                voxel_size=float(f"{pixel * binning:.6g}") if pixel and binning else None,
                halves=tuple(project / str(h) for h in halves) if None not in halves else None,
            )
        )
    notes = [f"paths relative to the project directory {project} ({how})"]
    if all_views is None:
        notes.append(
            "RELION's files drop the views it excluded: --all-views with the Import"
            " job's tilt_series.star (or the mdocs) reports them"
        )
    hands.discard(None)
    if hands:
        notes.append(
            f"_rlnTomoHand {', '.join(f'{h:g}' for h in sorted(hands))}: RELION's defocus"
            " handedness (the slope of defocus over depth), not the projection geometry;"
            " the wedge side does not depend on it"
        )
    return Dataset(path, "relion5", tuple(tomograms), tuple(notes))


def _full_series(all_views: Path | str, project: Path) -> dict[str, Path]:
    """{name: file of every view}: from RELION's Import tilt_series.star, or a mdoc folder."""
    all_views = Path(all_views)
    if all_views.is_dir():
        return {p.name.split(".")[0]: p for p in sorted(all_views.glob("*.mdoc"))}
    rows = _rows(all_views, star_blocks(all_views, "--all-views"), "rlnTomoTiltSeriesStarFile")
    return {str(r["rlnTomoName"]): project / str(r["rlnTomoTiltSeriesStarFile"]) for r in rows}


def _read_isonet(path: Path, blocks: dict, invert: bool, anglestep: float) -> Dataset:
    keys = ("rlnTiltMin", "rlnTiltMax", "rlnNumberSubtomo", "rlnMaskBoundary")
    key = next(k for k in keys if any(column(b, k) is not None for b in blocks.values()))
    rows = _rows(path, blocks, key)
    tomograms = []
    for i, row in enumerate(rows, start=1):
        lo, hi = as_number(row.get("rlnTiltMin")), as_number(row.get("rlnTiltMax"))
        if lo is None or hi is None:
            raise _fail(
                path,
                f"row {i} has no tilt range (_rlnTiltMin/_rlnTiltMax; IsoNet v1"
                " stars have none): give --minangle/--maxangle to a plain"
                " generate-noise, or add the columns",
            )
        scheme = range_scheme(lo, hi, anglestep, f"{path} row {i}")
        if invert:
            scheme = replace(scheme, sign=1, inverted=True)
        halves = [row.get(h) for h in _HALVES]
        have = None not in halves and "None" not in halves
        tomograms.append(
            Tomogram(
                _isonet_name(row, i),
                f"{path} row {i}",
                scheme,
                voxel_size=as_number(row.get("rlnPixelSize")),
                halves=tuple(path.parent / str(h) for h in halves) if have else None,
            )
        )
    return Dataset(
        path,
        "isonet",
        tuple(tomograms),
        (
            "IsoNet's _rlnTiltMin/_rlnTiltMax follow IMOD's .tlt numbers: the range used is"
            " -max .. -min (IsoNet2's own wedge mask)",
        ),
    )


def _isonet_name(row: dict, index: int) -> str:
    """Name of an IsoNet row: the halves' common stem, the file stem, or ``tomo<index>``."""
    stems = [Path(str(row.get(h))).stem for h in _HALVES if str(row.get(h)) not in ("None", "")]
    if len(stems) == 2:
        common = os.path.commonprefix(stems)  # noqa: RUF071 (characters, not paths)
        common = re.sub(r"(?i)[_.-]*(half|even|odd|evn)?[_.-]*$", "", common)
        if common:
            return common
    full = str(row.get("rlnTomoName", row.get("rlnMicrographName", "None")))
    return Path(full).stem if full not in ("None", "") else f"tomo{index}"


def _read_folder(path: Path, all_views, invert: bool) -> Dataset:
    files = sorted(p for p in path.iterdir() if p.is_file())
    for kind, suffixes in (("warp", (".xml",)), ("warp", (".tomostar",)), ("aretomo3", (".aln",))):
        chosen = [p for p in files if p.suffix.lower() in suffixes]
        if chosen:
            full = _full_series(all_views, path) if all_views is not None else {}
            tomograms = tuple(
                Tomogram(
                    p.stem, str(p), read_tilt_file(p, invert=invert, all_views=full.get(p.stem))
                )
                for p in chosen
            )
            return Dataset(path, kind, tomograms)
    series = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("*.tlt")))
    if not series:
        raise _fail(
            path,
            "holds no Warp .xml or .tomostar, no AreTomo3 .aln and no IMOD"
            " tilt-series folders with a .tlt",
        )
    return Dataset(path, "imod", tuple(_read_imod(folder, invert) for folder in series))


def _read_imod(folder: Path, invert: bool) -> Tomogram:
    """One etomo tilt-series folder: its .tlt, with tilt.com's exclusions and filter."""
    if (folder / "tilta.com").is_file() and (folder / "tiltb.com").is_file():
        raise _fail(
            folder,
            "is a dual-axis reconstruction (tilta.com and tiltb.com): its missing"
            " region is a pyramid, not one wedge; give one axis' folder",
        )
    com = next((folder / n for n in ("tilt.com", "tilta.com") if (folder / n).is_file()), None)
    options = _tilt_com(com) if com is not None else {}
    tlt = (
        folder / options["TILTFILE"][0] if "TILTFILE" in options else folder / f"{folder.name}.tlt"
    )
    if not tlt.is_file():
        found = sorted(folder.glob("*.tlt"))
        if len(found) != 1:
            raise _fail(folder, f"has {len(found)} .tlt files and no TILTFILE in a tilt.com")
        tlt = found[0]
    exclude = ",".join(v for key in ("EXCLUDELIST", "EXCLUDELIST2") for v in options.get(key, []))
    scheme = read_tilt_file(tlt, exclude=exclude or None, invert=invert)
    return Tomogram(folder.name, str(tlt), scheme, filtering=_com_filter(com, options))


def _tilt_com(path: Path) -> dict[str, list[str]]:
    """Return the options of IMOD's tilt.com: {KEY (upper case): values}; # and $ lines out."""
    options: dict[str, list[str]] = {}
    for line in read_text(path, "Dataset").splitlines():
        words = line.split()
        if words and not line.startswith(("#", "$")):
            options.setdefault(words[0].upper(), []).extend(" ".join(words[1:]).split(","))
    return {k: [v.strip() for v in vals if v.strip()] for k, vals in options.items()}


def _com_filter(path: Path | None, options: dict[str, list[str]]) -> dict:
    """Return the filter of a tilt.com: ``sirt-like`` with FakeSIRTiterations, else ``imod``."""
    if "RADIAL" not in options:
        return {}
    values = [as_number(v) for v in " ".join(options["RADIAL"]).split()]
    if len(values) != 2 or None in values or not 0 < values[0] < 1 or values[1] <= 0:
        raise _fail(
            path,
            f"has RADIAL {' '.join(options['RADIAL'])}, not a cutoff below 1 cycle"
            "/pixel and a falloff: give --filter and --radial",
        )
    cutoff, falloff = values
    if options.get("FALLOFFISTRUESIGMA", ["0"])[0] != "1":  # IMOD's sigma is falloff / sqrt(2)
        falloff = float(f"{falloff * math.sqrt(0.5):.6g}")
    fields: dict = {"filter": "imod", "radial": (cutoff, falloff)}
    if "FAKESIRTITERATIONS" in options:
        fields.update(filter="sirt-like", sirt_iterations=int(options["FAKESIRTITERATIONS"][0]))
    return fields


# ------------------------------------------------------------------------------ people, manifest


def describe_dataset(dataset: Dataset, folders: dict[str, str]) -> str:
    """Return the ``--dry-run`` table: tomogram, file, views used/excl., range, filter, folder."""
    rows = [("tomogram", "file", "used/excl", "range used", "filter", "folder")]
    for t in dataset.tomograms:
        used, span, filt = t.summary()
        rows.append(
            (t.name, _short_path(t.source, dataset.path), used, span, filt, folders.get(t.name, ""))
        )
    widths = [max(len(r[k]) for r in rows) for k in range(6)]
    lines = [
        f"Dataset     {dataset.path} ({KINDS[dataset.kind]}, {len(dataset.tomograms)} tomograms)"
    ]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    notes: dict[str, list[str]] = {}
    for t in dataset.tomograms:
        for note in t.scheme.notes if t.scheme else ():
            notes.setdefault(note, []).append(t.name)
    lines += [f"  note: {n} ({', '.join(names)})" for n, names in notes.items()]
    lines += [f"  note: {n}" for n in dataset.notes]
    return "\n".join(lines)


def _short_path(source: str, base: Path) -> str:
    folder = base if base.is_dir() else base.parent
    try:
        return str(Path(source).relative_to(folder))
    except ValueError:
        return source


_GLOBAL = ("Dataset", "DatasetKind", "Seed", "Volumes", "CubeSize", "Mode")
_LOOP = (
    "rlnTomoName",
    "mwrNoiseFolder",
    "mwrTiltFile",
    "mwrTilts",
    "mwrLabel",
    "mwrSeed",
    "mwrVoxelSize",
    "mwrFilter",
    "mwrSpectrum",
)


def manifest_text(
    dataset: Dataset, seed: int, count: int, source: NoiseSource, rows: list[dict]
) -> str:
    """Return the manifest's STAR text: the dataset, its seed, one row per folder."""
    lines = [
        "# mwr-dask: noise folders of a dataset (generate-noise --tomograms)",
        "",
        "data_mwr_dask_dataset",
        "",
    ]
    values = (dataset.path, dataset.kind, seed, count, source.cubesize, source.mode)
    lines += [f"_mwr{k} {_quote(str(v))}" for k, v in zip(_GLOBAL, values, strict=True)]
    lines += ["", "data_mwr_dask_tomograms", "", "loop_"]
    lines += [f"_{k} #{i + 1}" for i, k in enumerate(_LOOP)]
    lines += [" ".join(_quote(str(r[k])) for k in _LOOP) for r in rows]
    return "\n".join(lines) + "\n\n"


def manifest_row(
    name: str, folder: str, source: NoiseSource, tilt_file: str, spectrum: str = "None"
) -> dict:
    """Return one manifest row: what ``inspect`` checks the folder's volumes against.

    ``mwrLabel`` is the volumes' ``sha=``, ``tilt=``, ``schemes=`` or ``spectrum=`` label.
    """
    schemes = source.tilt_schemes
    if source.spectrum is not None:
        label, tilts = f"spectrum={source.spectrum.digest}", "measured"
    elif len(schemes) > 1:
        label, tilts = f"schemes={source.schemes_record}", "mixture"
    else:
        lo, hi = source.wedge(0)
        label = f"sha={schemes[0].digest}" if schemes else f"tilt={source.tilt}"
        tilts = f"{lo:g}..{hi:g}"
    return {
        "rlnTomoName": name,
        "mwrNoiseFolder": folder,
        "mwrTiltFile": tilt_file,
        "mwrTilts": tilts,
        "mwrLabel": label,
        "mwrSeed": source.seed,
        "mwrVoxelSize": f"{source.voxel_size:g}",
        "mwrFilter": source.filter,
        "mwrSpectrum": spectrum,
    }


def _quote(text: str) -> str:
    return f'"{text}"' if not text or re.search(r"\s", text) else text


def read_manifest(folder: Path) -> tuple[dict, list[dict]] | None:
    """Return the manifest of a ``--tomograms`` OUT folder as (dataset, rows) dicts, or None."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        blocks = star_blocks(path, "Manifest")
        head = blocks["mwr_dask_dataset"]
        rows = blocks["mwr_dask_tomograms"].to_dict("records")
    except (TiltSchemeError, KeyError, AttributeError) as err:
        raise DatasetError(f"Manifest {path}: cannot be read ({err}).") from None
    return {k.removeprefix("mwr"): v for k, v in head.items()}, rows


def merged_rows(folder: Path, rows: list[dict]) -> list[dict]:
    """``rows`` after the rows of an existing manifest for folders not in ``rows``."""
    old = read_manifest(folder)
    mine = {r["mwrNoiseFolder"] for r in rows}
    kept = [r for r in old[1] if r["mwrNoiseFolder"] not in mine] if old else []
    return kept + rows
