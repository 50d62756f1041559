"""``generate-noise --tomograms DATASET``: one noise folder per tomogram, on one cluster.

The sequence: read the dataset and select its rows (:mod:`mwr_dask.noise.datasets`); make one
:class:`~mwr_dask.noise.source.NoiseSource` per folder (``OUT/<name>``, or ``OUT/mixed`` with
``--mix``), each with its own seed derived from the dataset's; check them all; print the table
(``--dry-run``) or take the lock of OUT, start the cluster once, measure the spectra of the
halves on it (``--measured``), write the manifest, and run
:func:`mwr_dask.parallel.run.generate` for each folder with that one client. Bad input is one
sentence and exit 2 before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import typer

from mwr_dask.cli.common import fail
from mwr_dask.cli.running import RUN_OPTIONS, cluster_of, reporters, run_and_report


@dataclass
class Planned:
    """One folder to write: its name in OUT, its source, where its angles came from."""

    folder: str
    source: object  # NoiseSource (mode 3 with a stand-in spectrum until it is measured)
    tilt_file: str
    halves: tuple[Path, Path] | None = None
    spectrum: Path | None = None
    voxel_from_spectrum: bool = False


def run_dataset(p: dict, given: set[str], errors: list[str]) -> None:
    """Write (or plan) the noise of every selected tomogram of ``p["tomograms"]``; exit.

    ``p``: generate-noise's parameters, ``given``: those given, ``errors``: the options'
    problems.
    """
    from mwr_dask.noise.datasets import MANIFEST, MIXED

    out = p["output_folder"].absolute()
    dataset, seed, plan = plan_dataset(p, given, out, errors)
    largest = max(plan, key=lambda x: x.source.peak_bytes()).source
    options = cluster_of(p, out, largest, p["quiet"])
    say, warn = reporters(p["quiet"])
    if p["dry_run"]:
        folders = {t.name: str(out / (MIXED if p["mix"] else t.name)) for t in dataset.tomograms}
        show_dataset_plan(dataset, seed, plan, folders, options, p)
        raise typer.Exit(0)
    from mwr_dask.cli.signals import Interrupted, signals_raise
    from mwr_dask.files.folder import FolderError, folder_lock
    from mwr_dask.parallel.clusters import ClusterError

    say(f"Dataset {dataset.path}: {len(plan)} folder(s) in {out}, seed {seed}")
    created = not out.exists()
    try:
        with (
            folder_lock(out, sibling=p["cluster"] is not None),
            signals_raise(),
            options.client(say=say, warn=warn) as client,
        ):
            if p["measured"]:
                measure_spectra(client, plan, p["cubesize"], p["overwrite"], say, warn)
            write_manifest(out, dataset, seed, p["number_volume"], plan)
            for item in plan:
                run_and_report(
                    out / item.folder,
                    item.source,
                    p["start"],
                    p["number_volume"],
                    options,
                    quiet=p["quiet"],
                    client=client,
                    adopt_seed=False,
                    **{name: p[name] for name in RUN_OPTIONS},
                )
    except Interrupted as stop:
        raise fail(
            f"stopped by {stop}; rerun the same command to finish.", stop.exit_code
        ) from None
    except (FolderError, ClusterError) as err:
        if created:  # an OUT this run made and could not use goes again (if still empty)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise fail(str(err), 2 if isinstance(err, FolderError) else 1) from None
    say(f"Dataset done: {len(plan)} folder(s) in {out}; manifest {out / MANIFEST}")
    raise typer.Exit(0)


def plan_dataset(p: dict, given: set[str], out: Path, errors: list[str]):
    """Read and select the dataset; return it, its seed and one :class:`Planned` per folder.

    Exit 2 with every problem found (``errors``: those of the options) before anything starts.
    """
    from mwr_dask.noise import datasets as ds
    from mwr_dask.noise.measured import SpectrumNoise
    from mwr_dask.noise.source import NAME_PATTERN, fresh_seed

    dataset = None
    try:
        step = p["anglestep"] or 2.0
        dataset = ds.read_dataset(
            p["tomograms"], all_views=p["all_views"], invert=p["invert_tilts"], anglestep=step
        )
        dataset = dataset.select(_names(p["only"]), _names(p["exclude_tomograms"]))
        manifest = ds.read_manifest(out) if out.is_dir() else None
    except ds.DatasetError as err:
        errors.append(str(err))
    if errors or dataset is None:
        raise fail(" ".join(errors))
    if out.is_dir() and any(NAME_PATTERN.match(name) for name in os.listdir(out)):
        raise fail(
            f"{out} holds noise volumes (n_*.mrc): --tomograms writes one folder per"
            " tomogram inside OUT; give another folder."
        )
    seed = p["seed"]
    if seed is None:
        seed = int(manifest[0]["Seed"]) if manifest else fresh_seed()
    names = ("mode", "voxel_size", "filter", "radial", "sirt_iterations", "voltage")
    fields = {name: p[name] for name in names if name in given}
    fields["dose_weighting"] = p["dose_weighting"]
    fields["cubesize"] = p["cubesize"]
    plan: list[Planned] = []
    try:
        if p["mix"]:
            plan.append(_mixed(dataset, seed, fields))
        if p["dose_weighting"] != "none":
            dataset = _dosed(dataset, p, "voxel_size" in given)
        for t in dataset.tomograms if not p["mix"] else ():
            own = dict(fields)
            halves = t.halves
            if p["measured"]:
                if halves is None or not all(h.is_file() for h in halves):
                    raise ValueError(_no_halves(t, halves))
                own = {
                    "cubesize": p["cubesize"],
                    "spectrum": SpectrumNoise("", "to-measure"),
                    **({"voxel_size": p["voxel_size"]} if "voxel_size" in given else {}),
                }
            source = t.noise_source(ds.tomogram_seed(seed, t.name), own)
            spectrum = out / f"{t.name}.spectrum.mrc" if p["measured"] else None
            from_spectrum = spectrum is not None and not t.voxel_size and "voxel_size" not in given
            plan.append(Planned(t.name, source, t.source, halves, spectrum, from_spectrum))
        for item in plan:
            errors += item.source.run_problems(p["number_volume"], p["start"])
    except ValueError as err:  # NoiseSource and TiltScheme problems, one sentence each
        errors.append(str(err) if str(err).endswith(".") else f"{err}.")
    if errors:
        raise fail(" ".join(dict.fromkeys(errors)))
    return dataset, seed, plan


def _dosed(dataset, p: dict, voxel_given: bool):
    """Return the dataset, ``--dose-per-tilt`` given to its tilt series without doses.

    Dose weighting needs each tomogram's voxel size: the dataset's, or ``--voxel-size``.
    """
    from mwr_dask.noise import dose

    if not voxel_given:
        unknown = [t.name for t in dataset.tomograms if not t.voxel_size]
        if unknown:
            raise ValueError(
                f"the dataset gives no voxel size for {', '.join(unknown[:3])}: dose weighting"
                " needs --voxel-size (angstroms per voxel of the tomograms, at their binning)."
            )
    if p["dose_per_tilt"] is None:
        return dataset
    tomograms = tuple(
        t
        if dose.file_doses(t.scheme) is not None
        else replace(t, scheme=dose.with_doses(t.scheme, p["dose_per_tilt"], p["acquisition"]))
        for t in dataset.tomograms
    )
    return replace(dataset, tomograms=tomograms)


def _names(values: list[str] | None) -> list[str] | None:
    """Names given as ``--only A,B --only C``."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()] if values else None


def _no_halves(t, halves) -> str:
    if halves is None:
        return (
            f"tomogram {t.name} lists no half tomograms"
            " (_rlnTomoReconstructedTomogramHalf1/2): --measured needs them."
        )
    missing = [str(h) for h in halves if not h.is_file()]
    return f"tomogram {t.name}: its half tomogram {missing[0]} is not a file."


def _mixed(dataset, seed: int, fields: dict) -> Planned:
    """Plan the one folder of ``--mix``: volume i from tomogram i mod k, the dataset's seed."""
    from mwr_dask.noise.source import NoiseSource

    tomograms = dataset.tomograms
    own: dict = {"tilt_schemes": tuple(t.scheme for t in tomograms)}
    voxels = sorted({t.voxel_size or 1.0 for t in tomograms})
    filters = {tuple(sorted(t.filtering.items())) for t in tomograms}
    if len(voxels) > 1 and "voxel_size" not in fields:
        raise ValueError(
            f"--mix writes one folder, but the tomograms' voxel sizes differ"
            f" ({', '.join(f'{v:g}' for v in voxels)}): give --voxel-size"
        )
    if len(filters) > 1 and "filter" not in fields and fields.get("mode", 1) == 1:
        raise ValueError(
            "--mix writes one folder, but the tomograms' tilt.com filters differ: give --filter"
        )
    own["voxel_size"] = voxels[0]
    if fields.get("mode", 1) == 1:
        own.update(tomograms[0].filtering)
    names = ", ".join(t.name for t in tomograms)
    return Planned("mixed", NoiseSource(**{**own, **fields, "seed": seed}), names)


def show_dataset_plan(dataset, seed: int, plan: list[Planned], folders, options, p) -> None:
    """Print the ``--dry-run`` table and what the run would write; nothing is written."""
    from mwr_dask.noise.datasets import describe_dataset
    from mwr_dask.parallel.plan import FRESH_SEED

    count, n = p["number_volume"], p["cubesize"]
    typer.echo("Dry run: nothing is written or submitted.")
    typer.echo(describe_dataset(dataset, folders))
    total = len(plan) * count * plan[0].source.volume_bytes
    seed_text = seed if p["seed"] is not None else FRESH_SEED
    how = "the mixture's" if p["mix"] else "each tomogram's is derived from it and its name"
    typer.echo(
        f"Volumes: {count} of {n}^3 in each of {len(plan)} folder(s), {total / 2**30:.3f} GiB in"
        f" all; dataset seed {seed_text} ({how})"
    )
    for item in plan:
        src = item.source
        seed_of = src.seed if p["seed"] is not None else "derived when the run starts"
        if item.spectrum is not None:
            how = f"measured from {item.halves[0]} and {item.halves[1]} into {item.spectrum}"
        elif len(src.tilt_schemes) == 1:
            how = f"mode {src.mode}, {src.tilt_schemes[0].label}, seed {seed_of}"
        else:
            how = src.describe(seed=str(seed_text))
        typer.echo(f"  {item.folder}: {how}")
    typer.echo(f"Cluster: {options.describe()}")
    script = options.script()
    if script is not None:
        typer.echo(script.rstrip("\n"))


def measure_one(even: str, odd: str, cubesize: int, out: str) -> list[str]:
    """Measure one tomogram's noise spectrum from its halves and write it (on a worker)."""
    from mwr_dask.files.mrc import write_spectrum
    from mwr_dask.noise.measured import measure_noise

    result = measure_noise(Path(even), Path(odd), cubesize, workers=1)
    write_spectrum(Path(out), result.spectrum, result.labels(), result.voxel_size)
    return list(result.warnings)


def measure_spectra(client, plan: list[Planned], cubesize: int, overwrite: bool, say, warn):
    """Measure each planned tomogram's spectrum on the cluster; a spectrum there is kept."""
    from mwr_dask.files.mrc import read_header
    from mwr_dask.noise.measured import MeasureError

    todo = [i for i in plan if overwrite or not i.spectrum.is_file()]
    say(
        f"Measuring {len(todo)} noise spectra from the half tomograms on the cluster"
        f" ({len(plan) - len(todo)} measured before, kept)"
    )
    futures = [
        client.submit(
            measure_one, str(i.halves[0]), str(i.halves[1]), cubesize, str(i.spectrum), pure=False
        )
        for i in todo
    ]
    for item, future in zip(todo, futures, strict=True):
        try:
            for note in future.result():
                warn(f"{item.folder}: {note}")
        except MeasureError as err:
            raise fail(f"tomogram {item.folder}: {err}") from None
    for k, item in enumerate(plan):
        voxel = {}
        if item.voxel_from_spectrum and read_header(item.spectrum).voxel_size > 0:
            voxel = {"voxel_size": float(f"{read_header(item.spectrum).voxel_size:.6g}")}
        plan[k] = replace(item, source=replace(item.source, spectrum=item.spectrum, **voxel))


def write_manifest(out: Path, dataset, seed: int, count: int, plan: list[Planned]) -> None:
    """Write OUT's manifest atomically, keeping the rows of folders not in this run."""
    from mwr_dask.noise import datasets as ds

    rows = [
        ds.manifest_row(
            i.folder, i.folder, i.source, i.tilt_file, i.spectrum.name if i.spectrum else "None"
        )
        for i in plan
    ]
    text = ds.manifest_text(dataset, seed, count, plan[0].source, ds.merged_rows(out, rows))
    tmp = out / f".{ds.MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, out / ds.MANIFEST)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise fail(f"cannot write {out / ds.MANIFEST}: {err.strerror or err}.") from None


def inspect_dataset_command(folder: Path, json_output: bool, cluster: dict) -> None:
    """``inspect OUT`` of ``--tomograms``: every folder against its row, on one cluster; exit.

    ``cluster`` holds inspect's ncpus, scheduler, scheduler_file, connect_timeout,
    worker_timeout, and its plot and spectrum (refused: they apply to one folder).
    """
    import json

    from mwr_dask.cli.common import cluster_option_problems
    from mwr_dask.cli.signals import Interrupted, signals_raise
    from mwr_dask.inspection.dataset import inspect_dataset
    from mwr_dask.noise.datasets import DatasetError
    from mwr_dask.parallel.clusters import ClusterError, UsageError, make_cluster, wait_for_workers

    c = dict(cluster)
    timeout, plot, spectrum = (c.pop(k) for k in ("worker_timeout", "plot", "spectrum"))
    errors = cluster_option_problems(**c, worker_timeout=timeout)
    if plot is not None or spectrum is not None:
        errors.append(f"--plot and --spectrum apply to one noise folder: give {folder}/<tomogram>.")
    try:
        options = None if errors else make_cluster(**c, dashboard_address=None)
    except UsageError as err:
        errors.append(str(err))
    if errors:
        raise fail(" ".join(errors))
    try:
        with signals_raise(), options.client() as client:
            threads = wait_for_workers(client, timeout)
            report = inspect_dataset(folder, client, workers=threads)
    except Interrupted as stop:
        raise fail(f"stopped by {stop}.", stop.exit_code) from None
    except ClusterError as err:
        raise fail(str(err), 1) from None
    except DatasetError as err:
        raise fail(str(err)) from None
    from mwr_dask.inspection.render import json_ready

    typer.echo(json.dumps(json_ready(report.to_dict()), indent=2) if json_output else report.text())
    raise typer.Exit(0 if report.ok else 1)
