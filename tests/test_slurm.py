"""generate-noise --cluster slurm on a real SLURM (scripts/slurm-local.sh up).

Skipped where SLURM is absent, with the reason; a failure instead under CI or
MWR_DASK_REQUIRE_SLURM=1 (tests/conftest.py). The node of slurm-local.sh has as many CPUs as
the machine (2 here): every job asks for one core, and at most two jobs run at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import mrcfile
import numpy as np
import pytest

from mwr_dask.noise.normals import volume_rng

from .helpers import assert_only_volumes, cli, range_generator

# every test submits real jobs (seconds each): all of them are slow
pytestmark = [pytest.mark.usefixtures("slurm"), pytest.mark.slow]

SEED = "2024"
SMALL_JOBS = ["--cluster", "slurm", "--cores", "1", "--memory", "1GiB",
              "--walltime", "00:10:00", "--interface", "lo"]  # fmt: skip


def env_with_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    return {**env, "HOME": str(home)}, home


def squeue(workdir=None) -> dict[str, str]:
    """{job id: state} of the queued and running jobs (of ``workdir`` only, if given)."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%T|%Z"], capture_output=True, text=True, check=True
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job, state, where = line.strip().split("|", 2)
        if workdir is None or os.path.realpath(where) == os.path.realpath(workdir):
            jobs[job] = state
    return jobs


def scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_ids(stdout: str) -> list[str]:
    match = re.search(r"^SLURM jobs: (.*?)(;|$)", stdout, re.M)
    assert match, stdout
    return re.findall(r"(\d+) [A-Z]+", match.group(1))


def wait_until_gone(jobs, timeout=30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    left = {j: s for j, s in squeue().items() if j in jobs}
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = {j: s for j, s in squeue().items() if j in jobs}
    return left


def test_slurm_jobs_write_the_volumes_of_a_local_run(tmp_path):
    env, home = env_with_home(tmp_path)
    local = tmp_path / "local"
    ref = cli("generate-noise", str(local), "8", "16", "--seed", SEED, "--ncpus", "2",
              "--no-dashboard", env=env, cwd=tmp_path)  # fmt: skip
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "noise"
    logs = tmp_path / "joblogs"
    run = cli("generate-noise", str(out), "8", "16", "--seed", SEED, *SMALL_JOBS, "--jobs", "2",
              "--log-directory", str(logs), env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SLURM cluster: tls://127.0.0.1:" in run.stdout
    assert "8 written" in run.stdout
    assert_only_volumes(out, range(8))
    for i in range(8):
        name = f"n_{i:05d}.mrc"
        assert (out / name).read_bytes() == (local / name).read_bytes()

    # the workers were SLURM jobs: scontrol knows them, ran them, and their output shows a
    # worker registered with this run's scheduler
    scheduler = re.search(r"SLURM cluster: (tls://\S+),", run.stdout).group(1)
    ids = job_ids(run.stdout)
    assert len(ids) == 2
    for job in ids:
        info = scontrol(job)
        assert info["JobState"] in ("CANCELLED", "COMPLETED", "COMPLETING"), info
        assert info["WorkDir"] == str(tmp_path) and info["NumCPUs"] == "1"
        assert info["TimeLimit"] == "00:10:00"
    # a job whose worker was still starting when the (short) run ended is cancelled then
    logs_text = [(logs / f"dask-worker-{job}.err").read_text() for job in ids]
    registered = [f"Registered to:      {scheduler}" in log for log in logs_text]
    assert any(registered), logs_text[0][-2000:]
    for ok, log in zip(registered, logs_text, strict=True):
        assert ok or "CANCELLED" in log, log[-2000:]
    # the jobs reached the scheduler over TLS with the run's keys, read from files: the
    # scripts SLURM keeps name them, and hold no key
    for job in ids:
        script = subprocess.run(["scontrol", "write", "batch_script", job, "-"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "--tls-key" in script and "--tls-ca-file" in script, script
        assert "PRIVATE KEY" not in script and "BEGIN" not in script
    # nothing left in the queue, nothing in the working folder or HOME but what we made
    assert not wait_until_gone(ids)
    assert f"Cancelling SLURM jobs {', '.join(ids)}" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "joblogs", "local", "noise"]
    assert list(home.iterdir()) == []


def test_adaptive_scaling_on_slurm(tmp_path):
    env, _ = env_with_home(tmp_path)
    out = tmp_path / "noise"
    run = cli("generate-noise", str(out), "6", "16", "--seed", SEED, "--mode", "2",
              *SMALL_JOBS, "--adapt", "1:2", env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SLURM: 1 to 2 jobs (adaptive)" in run.stdout
    assert_only_volumes(out, range(6))
    assert not squeue(tmp_path)
    # the default job-output folder beside the output folder goes after a successful run
    assert f"output in {tmp_path}/.noise.mwr-dask/jobs (kept if the run fails)" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "noise"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_cancels_every_job(tmp_path, signum):
    env, _ = env_with_home(tmp_path)
    out = tmp_path / "noise"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mwr_dask", "generate-noise", str(out), "5000", "48",
         *SMALL_JOBS, "--jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        seen: dict[str, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            seen = squeue(tmp_path)
            if len(seen) == 2 and set(seen.values()) == {"RUNNING"}:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        assert len(seen) == 2 and set(seen.values()) == {"RUNNING"}, seen
        # let the workers join and the run start writing, then Ctrl-C
        while time.monotonic() < deadline and not (out.is_dir() and any(out.iterdir())):
            time.sleep(0.2)
        proc.send_signal(signum)
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, stdout + stderr
    left = wait_until_gone(seen, timeout=max(1.0, 30 - (time.monotonic() - t0)))
    assert not left, f"jobs left in the queue after Ctrl-C: {left}"
    assert not squeue(tmp_path)
    assert f"Cancelling SLURM jobs {', '.join(sorted(seen, key=int))}" in stdout
    assert "Traceback" not in stderr
    # a failed run keeps its jobs' output
    logs = tmp_path / ".noise.mwr-dask" / "jobs"
    assert sorted(p.name for p in logs.iterdir()) == sorted(
        f"dask-worker-{job}.{ext}" for job in seen for ext in ("err", "out")
    )


def test_a_refused_job_is_one_sentence(tmp_path):
    env, _ = env_with_home(tmp_path)
    run = cli("generate-noise", str(tmp_path / "noise"), "4", "16", "--cluster", "slurm",
              "--memory", "100000GiB", "--interface", "lo", env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 1
    assert "SLURM refused the job: sbatch: error:" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not squeue(tmp_path)


def test_jobs_stuck_in_the_queue_are_reported_and_cancelled(tmp_path):
    env, _ = env_with_home(tmp_path)
    t0 = time.monotonic()
    run = cli("generate-noise", str(tmp_path / "noise"), "4", "16", "--cluster", "slurm",
              # 64 cores: more than the node has; 20GiB: 320 MiB for each of the 64 worker
              # processes, enough for a 16^3 volume under Dask's pause threshold
              "--cores", "64", "--memory", "20GiB", "--interface", "lo",
              "--worker-timeout", "4", env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 1
    assert time.monotonic() - t0 < 45
    match = re.search(r"no worker joined within 4 s; SLURM jobs (\d+) PENDING", run.stderr)
    assert match, run.stderr
    assert "The jobs are cancelled" in run.stderr and "Traceback" not in run.stderr
    assert not wait_until_gone([match.group(1)], timeout=10)
    # the job never ran: no output to keep, nothing left beside the (removed) output folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def scancel_mid_run(tmp_path, count: int, *flags: str, files: int = 50):
    """Start a run of ``count`` 48^3 volumes, cancel its jobs once ``files`` are written.

    Returns the jobs cancelled and the finished run (stdout, stderr, return code).
    """
    env, _ = env_with_home(tmp_path)
    out = tmp_path / "noise"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mwr_dask", "generate-noise", str(out), str(count), "48",
         "--seed", SEED, *SMALL_JOBS, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and len(os.listdir(out)) >= files:
                break
            time.sleep(0.1)
        first = squeue(tmp_path)
        assert proc.poll() is None and first, proc.communicate()
        subprocess.run(["scancel", *first], check=True)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return first, stdout, stderr, proc.returncode


def test_jobs_that_end_mid_run_are_replaced(tmp_path):
    """A walltime or an administrator's scancel ends the jobs: new ones finish the run."""
    first, stdout, stderr, code = scancel_mid_run(tmp_path, 800, "--jobs", "2")
    out = tmp_path / "noise"
    assert len(first) == 2
    assert code == 0, stdout + stderr
    assert re.search(r"SLURM jobs \d+(, \d+)? ended; submitting new ones", stdout), stdout
    submitted = re.search(r"Cancelling SLURM jobs (.*)", stdout).group(1).split(", ")
    assert len(submitted) == 4 and set(first) <= set(submitted)
    assert_only_volumes(out, range(800))
    g = range_generator(1, 48, -60.0, 60.0, 2.0)
    for i in range(0, 800, 97):
        with mrcfile.open(out / f"n_{i:05d}.mrc") as m:
            np.testing.assert_array_equal(m.data, g(volume_rng(int(SEED), i)))
    assert not wait_until_gone(submitted)


def test_the_printed_dashboard_serves_during_a_slurm_run(tmp_path):
    """The link printed for a batch cluster names where its dashboard really listens.

    No --interface: the scheduler listens on every interface (TLS only) and advertises the
    host's address, while the dashboard stays on the loopback; the link names the loopback.
    """
    env, _ = env_with_home(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mwr_dask", "generate-noise", str(tmp_path / "noise"), "300",
         "40", *SMALL_JOBS[:-2], "--dashboard-address", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        link = hint = None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("Dashboard: "):
                link = line.split()[1]
                hint = next(proc.stdout)
                break
        assert link and link.startswith("http://127.0.0.1:"), proc.stderr.read()
        assert "SLURM cluster: tls://" in "".join(seen)
        port = link.split(":")[2].split("/")[0]
        assert f"ssh -N -L {port}:localhost:{port} " in hint, hint
        with urllib.request.urlopen(link, timeout=30) as page:
            assert page.status == 200
    finally:
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr


def test_jobs_never_import_from_another_users_scratch_folder(tmp_path):
    """Issue 21.1 on the batch cluster: each job makes its own 0700 scratch folder."""
    from .test_security import markers, shared_tmp_with_planted_scratch

    env, _ = env_with_home(tmp_path)
    with shared_tmp_with_planted_scratch() as base:
        env["TMPDIR"] = base  # sbatch passes the environment on to the jobs
        out = tmp_path / "noise"
        run = cli("generate-noise", str(out), "4", "16", *SMALL_JOBS, env=env, cwd=tmp_path)
        assert markers(base) == [], run.stdout + run.stderr
        assert run.returncode == 0, run.stdout + run.stderr
        assert_only_volumes(out, range(4))
        assert not wait_until_gone(job_ids(run.stdout))
        # the scheduler's and the job's scratch folders are gone with the run
        assert sorted(os.listdir(base)) == ["dask-scratch-space"]


def test_jobs_that_keep_ending_before_their_workers_join_stop_the_run(tmp_path):
    """The first job works; every later one exits in its prologue (a broken node, say)."""
    marker = tmp_path / "first-job-ran"
    first, stdout, stderr, code = scancel_mid_run(
        tmp_path, 3000, "--jobs", "1", "--prologue", f"test -e {marker} && exit 3; touch {marker}",
        files=20,
    )  # fmt: skip
    assert code == 1 and len(first) == 1, stdout + stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert re.search(
        r"SLURM jobs keep ending before their workers join \(3 in a row, the last \d+\); see"
        r" their output in \S+/\.noise\.mwr-dask/jobs\.", stderr
    ), stderr  # fmt: skip
    submitted = re.search(r"Cancelling SLURM jobs (.*)", stdout).group(1).split(", ")
    assert len(submitted) == 4 and set(first) <= set(submitted), stdout
    assert not wait_until_gone(submitted)
    out = tmp_path / "noise"
    assert_only_volumes(out, sorted(int(n[2:7]) for n in os.listdir(out)))
