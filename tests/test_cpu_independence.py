"""Volume i has the same bytes on every CPU (same mwr-dask, numpy and scipy versions).

Other CPUs are emulated on this one, as a heterogeneous cluster would run the code: numpy is
told to skip its run-time dispatch targets (``NPY_DISABLE_CPU_FEATURES``, names taken from the
installed numpy), OpenBLAS to use an older kernel (``OPENBLAS_CORETYPE``) and glibc's libm to
pick its variants without AVX-512, AVX2 and FMA (``GLIBC_TUNABLES``). Each level runs in its own
interpreter (the three in parallel); each generator's volumes, and one written MRC file, are
hashed there and compared here.

A generator added later (filtered back-projection, tilt-file schemes, measured spectra) is one
more entry in ``GENERATORS``: a name and a Python expression, evaluated in the subprocess with
``range_generator``, ``scheme_generator`` (tests.helpers), an uneven scheme and a spectrum-file
maker in scope, that gives a callable ``rng -> float32 volume``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

#: three interpreters importing numpy, scipy and mrcfile: about 4 s on 2 cores
pytestmark = pytest.mark.slow

#: (name, expression giving ``rng -> volume``); small cubes, odd and prime sizes included.
GENERATORS = [
    ("mode 1, 24, -60..60 step 3", "range_generator(1, 24, -60.0, 60.0, 3.0)"),
    ("mode 1, 27, -45..55 step 2.5", "range_generator(1, 27, -45.0, 55.0, 2.5)"),
    ("mode 2, 24, -60..60", "range_generator(2, 24, -60.0, 60.0, 2.0)"),
    ("mode 2, 31 (prime), -50..65", "range_generator(2, 31, -50.0, 65.0, 2.0)"),
    ("mode 1 imod filter, 24", "range_generator(1, 24, -60.0, 60.0, 3.0, filter='imod')"),
    ("mode 1 ramp filter, 25", "range_generator(1, 25, -54.0, 60.0, 2.0, filter='ramp')"),
    ("mode 1 hamming filter, 24", "range_generator(1, 24, -60.0, 60.0, 3.0, filter='hamming')"),
    ("mode 1 aretomo filter, 24", "range_generator(1, 24, -50.0, 64.0, 3.0, filter='aretomo')"),
    ("tilt scheme with gaps, 26", "scheme_generator(1, 26, uneven)"),
    ("tilt scheme, sirt-like, 24", "scheme_generator(1, 24, uneven, filter='sirt-like')"),
    ("tilt scheme, mode 2, 24", "scheme_generator(2, 24, uneven)"),
    ("measured spectrum, 20", "spectrum_generator(20)"),
    ("mode 1 dose, 24", "range_generator(1, 24, -60.0, 60.0, 3.0, **dosed('grant-grigorieff'))"),
    ("mode 2 dose, 24", "range_generator(2, 24, -60.0, 60.0, 3.0, **dosed('bfactor'))"),
]
#: Volumes per generator, and the seed.
COUNT, SEED = 3, 13

_AVX512 = "-AVX512F,-AVX512CD,-AVX512DQ,-AVX512BW,-AVX512VL"
_AVX2 = "-AVX2,-AVX2_Usable,-FMA,-FMA_Usable,-FMA4,-AVX,-AVX_Usable,-AVX_Fast_Unaligned_Load"

_CHILD = textwrap.dedent(
    """
    import hashlib, json, sys, tempfile
    from pathlib import Path
    import numpy as np
    from mwr_dask.noise import schemes as tiltscheme
    from mwr_dask.noise.normals import volume_rng
    from tests.helpers import range_generator, scheme_generator
    from mwr_dask.files.mrc import write_spectrum
    from mwr_dask.noise.measured import spectrum_noise
    from mwr_dask.files.mrc import write_volume

    # an uneven, asymmetric scheme with gaps (views excluded), as tilt files give
    ANGLES = [-48.0, -45.0, -42.0, -27.0, -24.0, -3.0, 0.0, 3.5, 30.0, 33.0, 57.0, 66.0]
    uneven = tiltscheme.TiltScheme(
        tuple(tiltscheme.View(i + 1, a) for i, a in enumerate(ANGLES)), source="uneven.tlt"
    )

    def spectrum_generator(n):
        # an anisotropic spectrum file, as measure-noise writes one (centred, mean 1, DC 0)
        f = np.fft.fftshift(np.fft.fftfreq(n))
        kz, ky, kx = np.meshgrid(f, f, f, indexing="ij")
        s = (1.0 + 3.0 * np.abs(kx)) / (1.0 + 40.0 * (kz * kz + 0.3 * ky * ky))
        s[n // 2, n // 2, n // 2] = 0.0
        path = Path(tmp) / f"spectrum{n}.mrc"
        write_spectrum(path, (s / s.mean()).astype(np.float32), ["cpu test spectrum"])
        return spectrum_noise(path)

    def dosed(model):  # doses of an irregular order over the 41 tilts, 10 A voxels
        return {"dose_weighting": model, "voxel_size": 10.0,
                "doses": tuple(2.5 * ((7 * k) % 41) for k in range(41))}

    def sha(data):
        return hashlib.sha256(data).hexdigest()

    entries, count, seed = json.loads(sys.argv[1])
    out = {}
    # control: code whose bits are known to depend on the instruction set and BLAS kernel
    x = np.linspace(0.01, 40.0, 100_003, dtype=np.float32)
    parts = [np.sin(x), np.log(x), np.log(x.astype(np.float64)), np.float32(np.dot(x, x))]
    out["control"] = sha(b"".join(part.tobytes() for part in parts))
    with tempfile.TemporaryDirectory() as tmp:
        for name, expr in entries:
            scope = {
                "range_generator": range_generator,
                "scheme_generator": scheme_generator,
                "uneven": uneven,
                "spectrum_generator": spectrum_generator,
                "dosed": dosed,
            }
            gen = eval(expr, scope)
            hashes = []
            for i in range(count):
                volume = gen(volume_rng(seed, i))
                hashes.append(sha(np.ascontiguousarray(volume, dtype=np.float32).tobytes()))
            path = Path(tmp) / "n_00000.mrc"
            write_volume(path, volume, 4.35, [f"seed={seed} {name}"], Path(tmp))
            hashes.append(sha(path.read_bytes()))
            out[name] = hashes
    print(json.dumps(out))
    """
)


def cpu_levels() -> dict[str, dict[str, str]]:
    """Environment of each emulated CPU: this one, one without AVX-512 (if it has), no AVX2.

    Only dispatch targets of the installed numpy that this CPU has are named (numpy refuses
    names it does not know, and names the CPU lacks change nothing).
    """
    from numpy._core import _multiarray_umath as umath

    present = {name for name, there in umath.__cpu_features__.items() if there}
    targets = [name for name in umath.__cpu_dispatch__ if name in present]
    wide = [name for name in targets if "512" in name or name == "X86_V4"]
    levels = {"this CPU": {}}
    if wide:  # a CPU without AVX-512 is already at that level: emulating it changes nothing
        levels["no AVX-512"] = {
            "NPY_DISABLE_CPU_FEATURES": " ".join(wide),
            "OPENBLAS_CORETYPE": "Haswell",
            "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={_AVX512}",
        }
    return levels | {
        "no AVX2": {
            "NPY_DISABLE_CPU_FEATURES": " ".join(targets),
            "OPENBLAS_CORETYPE": "Nehalem",
            "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={_AVX512},{_AVX2}",
        },
    }


@pytest.fixture(scope="module")
def hashes() -> dict[str, dict[str, list[str]]]:
    """Hashes of every generator's volumes (and of one file) under each emulated CPU."""
    root = Path(__file__).resolve().parent.parent
    arg = json.dumps([GENERATORS, COUNT, SEED])
    procs = {}
    for level, extra in cpu_levels().items():
        env = {**os.environ, **extra, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        procs[level] = subprocess.Popen(
            [sys.executable, "-c", _CHILD, arg],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for level, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{level}: {stderr[-2000:]}"
        results[level] = json.loads(stdout)
    return results


def test_the_emulation_changes_what_depends_on_the_cpu(hashes):
    """The levels really run other code: numpy's sin and log, or BLAS, differ between them."""
    levels = cpu_levels()
    controls = {level: hashes[level]["control"] for level in levels}
    distinct = len(set(controls.values()))
    # at least one emulated level runs other code than this CPU, or no comparison means a thing
    assert distinct >= 2, f"no emulated CPU level changes numpy's sin/log or BLAS: {controls}"
    if distinct < len(levels):
        features = {level: env.get("NPY_DISABLE_CPU_FEATURES", "") for level, env in levels.items()}
        skip_or_fail(
            f"only {distinct} of {len(levels)} emulated CPU levels change numpy's results on "
            f"this CPU and numpy (disabled features per level: {features}); "
            "the volumes were still compared across all levels"
        )


@pytest.mark.parametrize(("name", "expr"), GENERATORS, ids=[g[0] for g in GENERATORS])
def test_volumes_have_the_same_bytes_on_every_cpu(hashes, name, expr):
    by_level = {level: result[name] for level, result in hashes.items()}
    reference = by_level["this CPU"]
    assert len(set(reference[:COUNT])) == COUNT  # distinct volumes, so a match means something
    for level, got in by_level.items():
        differ = [i for i, (a, b) in enumerate(zip(reference, got, strict=True)) if a != b]
        assert not differ, f"{name} ({expr}): volumes {differ} differ on '{level}' (last = file)"
