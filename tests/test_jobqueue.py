"""Batch-cluster options without a batch system: --dry-run job scripts, option precedence,
usage errors, job-state parsing, and the import of dask-jobqueue (no write to HOME)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from mwr_dask.cli import app
from mwr_dask.parallel.clusters import batch as jobqueue
from mwr_dask.parallel.clusters import jobs, systems
from mwr_dask.parallel.clusters.checks import SINGLE_THREAD_ENV

from .helpers import cli

runner = CliRunner()


def clean_env(home, **extra):
    """Environment of a subprocess with an empty HOME and no dask config from the outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    return {**env, "HOME": str(home), **extra}


def script_of(output: str) -> str:
    assert "Job script (one per" in output, output
    return output.split("Job script (one per", 1)[1]


@pytest.mark.slow
def test_dry_run_prints_a_slurm_job_script_and_writes_nothing(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "noise"
    run = cli(
        "generate-noise", str(out), "100", "32", "--seed", "7", "--dry-run",
        "--cluster", "slurm", "--jobs", "3", "--cores", "4", "--memory", "6GiB",
        "--walltime", "01:30:00", "--queue", "short", "--account", "lab42",
        "--interface", "lo", "--local-directory", "$TMPDIR",
        "--job-extra=--exclusive", "--job-extra", "--qos=high",
        "--prologue", "module load fftw", "--prologue", "echo started",
        env=clean_env(home), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "Volumes: n_00000.mrc .. n_00099.mrc, 100 of 32x32x32" in text
    assert f"{100 * (1024 + 4 * 32**3):,} in all" in text
    assert "SLURM: 3 jobs, each 4 cores, 6 GiB, walltime 01:30:00" in text
    assert "Tasks: 48 " in text and "for 12 worker threads" in text  # 4 per worker
    script = script_of(text)
    for line in (
        "#SBATCH -p short", "#SBATCH -A lab42", "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=6G", "#SBATCH -t 01:30:00", "#SBATCH --exclusive", "#SBATCH --qos=high",
        'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true',  # workers may open all the files allowed
        f"#SBATCH -o {tmp_path}/.noise.mwr-dask/jobs/",
    ):  # fmt: skip
        assert line in script, (line, script)
    lines = script.splitlines()
    exports = [f"export {k}={v}" for k, v in SINGLE_THREAD_ENV.items()]
    first = lines.index(exports[0])
    assert lines[first : first + len(exports)] == exports
    assert lines.index("module load fftw") < lines.index("echo started")
    assert lines.index(exports[-1]) < lines.index("module load fftw")
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker")
    # one thread per worker process, as many processes as cores, memory split between them
    assert "--nthreads 1 " in worker and "--nworkers 4 " in worker
    assert "--memory-limit 1.50GiB" in worker
    # a private scratch folder made on the node in $TMPDIR (issue 21.1), removed with the job
    assert 'MWR_DASK_SCRATCH=$(mktemp -d "$TMPDIR/mwr-dask-scratch-XXXXXXXX") || exit 1' in lines
    assert "--interface lo" in worker and "--local-directory $MWR_DASK_SCRATCH" in worker
    # each worker leaves 5 min (+-2.5) before the 01:30:00 walltime; a new job replaces it
    assert "--lifetime 5100s --lifetime-stagger 300s" in worker
    # the run's TLS key is read from a file of the private credentials folder
    keys = f"{tmp_path}/.noise.mwr-dask/tls"
    assert f"--tls-cert {keys}/cert.pem --tls-key {keys}/key.pem" in worker
    # nothing written: no output folder, no state folder, no job-log folder, nothing in HOME
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert list(home.iterdir()) == []


def test_dry_run_without_a_cluster_prints_the_plan_only(tmp_path):
    out = tmp_path / "noise"
    result = runner.invoke(
        app, ["generate-noise", str(out), "10", "16", "--mode", "2", "--ncpus", "2", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "Volumes: n_00000.mrc .. n_00009.mrc, 10 of 16x16x16 (wedge filter)" in result.output
    assert "Cluster: local, 2 worker processes of 1 thread" in result.output
    assert "Tasks: 8 " in result.output
    assert "Job script" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_dry_run_scripts_for_pbs_and_sge(tmp_path):
    pbs = runner.invoke(
        app,
        ["generate-noise", str(tmp_path / "n"), "4", "16", "--dry-run", "--cluster", "pbs",
         "--cores", "2", "--memory", "4GiB", "--queue", "workq", "--account", "proj",
         "--walltime", "02:00:00", "--job-extra", "-l place=scatter"],
    )  # fmt: skip
    assert pbs.exit_code == 0, pbs.output
    script = script_of(pbs.output)
    for line in ("#PBS -q workq", "#PBS -A proj", "#PBS -l select=1:ncpus=2:mem=4096MB",
                 "#PBS -l walltime=02:00:00", "#PBS -l place=scatter"):  # fmt: skip
        assert line in script, (line, script)
    sge = runner.invoke(
        app,
        ["generate-noise", str(tmp_path / "n"), "4", "16", "--dry-run", "--cluster", "sge",
         "--cores", "1", "--memory", "2GiB", "--account", "proj", "--walltime", "01:00:00"],
    )  # fmt: skip
    assert sge.exit_code == 0, sge.output
    script = script_of(sge.output)
    assert "#$ -P proj" in script and "#$ -l h_rt=01:00:00" in script
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_flags_override_the_config_file_which_overrides_the_user_config(tmp_path):
    user = tmp_path / "user-dask"
    user.mkdir()
    (user / "site.yaml").write_text(
        textwrap.dedent(
            """\
            jobqueue:
              slurm:
                queue: from-user-config
                account: user-account
                walltime: '09:00:00'
            """
        )
    )
    config = tmp_path / "slurm.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            jobqueue:
              slurm:
                cores: 2
                memory: 3GiB
                queue: from-file
                walltime: '04:00:00'
                job_extra_directives: ['--constraint=avx2']
                job-script-prologue: ['module load site-python']
                log-directory: /scratch/logs
            """
        )
    )
    run = cli(
        "generate-noise", str(tmp_path / "n"), "4", "16", "--dry-run", "--cluster", "slurm",
        "--cluster-config", str(config), "--walltime", "00:20:00",
        env=clean_env(tmp_path / "home", DASK_CONFIG=str(user)),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    script = script_of(run.stdout)
    assert "#SBATCH -t 00:20:00" in script  # flag over file over user config
    assert "#SBATCH -p from-file" in script  # file over user config
    assert "#SBATCH -A user-account" in script  # user config where nothing else says
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=3G" in script
    assert "#SBATCH --constraint=avx2" in script
    assert "module load site-python" in script and "export OMP_NUM_THREADS=1" in script
    assert "#SBATCH -o /scratch/logs/" in script
    assert "--nworkers 2" in script and "--nthreads 1" in script
    assert not (tmp_path / "home").exists() and not (tmp_path / "n").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "kubernetes"], "--cluster must be one of slurm, pbs, sge"),
        (["--cluster", "slurm", "--jobs", "0"], "--jobs must be at least 1, not 0."),
        (["--cluster", "slurm", "--adapt", "4"], "--adapt takes MIN:MAX"),
        (["--cluster", "slurm", "--adapt", "a:b"], "--adapt takes MIN:MAX"),
        (["--cluster", "slurm", "--adapt", "0:4"], "needs 1 <= MIN <= MAX"),
        (["--cluster", "slurm", "--adapt", "5:2"], "needs 1 <= MIN <= MAX"),
        (["--cluster", "slurm", "--adapt", "1:2", "--jobs", "2"], "--jobs or --adapt, not both"),
        (["--cluster", "slurm", "--cores", "0"], "--cores must be at least 1"),
        (["--cluster", "slurm", "--memory", "lots"], "--memory takes an amount"),
        (["--cluster", "slurm", "--interface", "nosuch0"], "is not a network interface"),
        (["--cluster", "htcondor", "--queue", "q"], "--queue does not apply to --cluster"),
        (["--cluster", "slurm", "--ncpus", "2"], "--ncpus sets the local cluster"),
        (["--cluster", "slurm", "--scheduler", "tcp://h:1"], "--cluster or --scheduler"),
        (["--jobs", "2", "--memory", "1GiB"], "--jobs, --memory need --cluster."),
        (["--cluster-config", "x.yaml"], "--cluster-config needs --cluster."),
    ],
)
def test_usage_errors_exit_2_with_one_sentence(tmp_path, args, message):
    out = tmp_path / "noise"
    result = runner.invoke(app, ["generate-noise", str(out), "3", "16", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("jobqueue: [slurm\n  - : :", "is not valid YAML at line"),
        ("- just\n- a list\n", "is not a YAML mapping"),
        ("jobqueue:\n  pbs:\n    cores: 2\n", "has no jobqueue.slurm section (it has pbs)"),
        ("jobqueue:\n  slurm:\n    memroy: 2GiB\n", "sets memroy in jobqueue.slurm"),
    ],
)
def test_bad_config_files_exit_2(tmp_path, content, message):
    config = tmp_path / "cluster.yaml"
    if content is not None:
        config.write_text(content)
    out = tmp_path / "noise"
    result = runner.invoke(
        app,
        ["generate-noise", str(out), "3", "16", "--cluster", "slurm", "--cluster-config",
         str(config), "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_shipped_example_configs_are_valid(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for system in ("slurm", "pbs", "sge"):
        path = os.path.join(root, "configs", f"{system}.yaml")
        result = runner.invoke(
            app,
            ["generate-noise", str(tmp_path / "n"), "3", "16", "--dry-run", "--cluster", system,
             "--cluster-config", path],
        )  # fmt: skip
        assert result.exit_code == 0, (system, result.output)
        assert "Job script" in result.output


@pytest.mark.slow
def test_importing_dask_jobqueue_writes_nothing_to_home_and_keeps_ctrl_c(tmp_path):
    code = textwrap.dedent(
        """
        import signal
        before = signal.getsignal(signal.SIGINT)
        from mwr_dask.parallel.clusters.jobqueue_import import import_dask_jobqueue
        import_dask_jobqueue()
        assert signal.getsignal(signal.SIGINT) is before, signal.getsignal(signal.SIGINT)
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(home), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert list(home.iterdir()) == []
    # the control: a plain import does write there (so the test above means something)
    plain = subprocess.run(
        [sys.executable, "-c", "import dask_jobqueue"], env=clean_env(home), capture_output=True
    )
    assert plain.returncode == 0
    assert (home / ".config" / "dask" / "jobqueue.yaml").exists()


def test_the_cli_does_not_import_dask_jobqueue_without_cluster(tmp_path):
    code = (
        "import sys; from mwr_dask.cli import app; from mwr_dask.parallel import clusters, plan;"
        " assert 'dask_jobqueue' not in sys.modules"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    # the cluster package imports Dask only when a cluster is described or started
    code = (
        "import sys; from mwr_dask.parallel.clusters import batch, checks, dashboard, jobs,"
        " jobqueue_import, local, remote, systems;"
        " assert not {'dask', 'distributed', 'dask_jobqueue'} & set(sys.modules), sys.modules"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(
    ("walltime", "system", "args"),
    [
        ("01:30:00", "slurm", ["--lifetime", "5100s", "--lifetime-stagger", "300s"]),
        ("00:10:00", "pbs", ["--lifetime", "480s", "--lifetime-stagger", "120s"]),
        ("2-00:00:00", "slurm", ["--lifetime", "172500s", "--lifetime-stagger", "300s"]),
        ("02:00", "lsf", ["--lifetime", "6900s", "--lifetime-stagger", "300s"]),
        ("02:00", "slurm", []),  # SLURM's MM:SS and LSF's HH:MM: only the documented forms
        ("30", "slurm", []),  # minutes on SLURM, seconds on PBS: no guess
        (None, "sge", []),
    ],
)
def test_workers_leave_before_the_walltime(walltime, system, args):
    assert jobqueue.lifetime_args(walltime, system) == args


def test_parse_adapt():
    assert jobqueue.parse_adapt("1:10") == (1, 10)
    assert jobqueue.parse_adapt(" 2 : 2 ") == (2, 2)
    with pytest.raises(jobqueue.UsageError):
        jobqueue.parse_adapt("10")


@pytest.mark.parametrize(
    ("system", "output", "expected", "argv"),
    [
        ("slurm", "11|RUNNING|None\n12|PENDING|Resources\n", {"11": "RUNNING",
                                                              "12": "PENDING (Resources)"},
         ["squeue", "-h", "-o", "%i|%T|%r", "-j", "11,12,13"]),
        ("pbs", "Job id  Name  User  Time Use S Queue\n------\n"
                "11.srv  dask-worker  me  00:00:01 R workq\n12.srv  dask-worker  me  0 Q workq\n"
                "13.srv  dask-worker  me  0 F workq\n", {"11": "R", "12": "Q"},
         ["qstat", "11", "12", "13"]),
        ("sge", "job-ID prior name user state submit/start at queue slots\n-----\n"
                "  11 0.5 dask-worker me r 01/01/2026 10:00:00 all.q@n1 1\n"
                "  12 0.0 dask-worker me qw 01/01/2026 10:00:00 1\n"
                "  99 0.0 other me r 01/01/2026 10:00:00 1\n", {"11": "r", "12": "qw"},
         ["qstat"]),
        ("lsf", "JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME\n"
                "11 me RUN normal login n1 dask-worker Jan 1 10:00\n"
                "12 me PEND normal login - dask-worker Jan 1 10:00\n"
                "13 me DONE normal login n1 dask-worker Jan 1 10:00\n",
         {"11": "RUN", "12": "PEND"}, ["bjobs", "-w", "11", "12", "13"]),
        ("htcondor", "11 0 2\n12 0 1\n13 0 4\n", {"11.0": "Running", "12.0": "Idle"},
         ["condor_q", "11.0", "12.0", "13.0", "-af", "ClusterId", "ProcId", "JobStatus"]),
    ],
)  # fmt: skip
def test_job_states_of_each_batch_system(monkeypatch, system, output, expected, argv):
    calls = []

    def fake(command):
        calls.append(command)
        return output

    monkeypatch.setattr(systems, "run_status", fake)
    ids = ["11.0", "12.0", "13.0"] if system == "htcondor" else ["11", "12", "13"]
    assert systems.job_states(system, ids) == expected
    assert calls == [argv]  # the status command that the output above answers


def test_job_states_unknown_when_the_status_command_is_missing(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert systems.job_states("slurm", ["1"]) is None
    tracker = jobs.JobTracker("slurm", "scancel")
    tracker.submitted.append("1")
    assert tracker.describe(tracker.states()) == "1 (state unknown)"


def test_cleanup_ignores_a_second_ctrl_c():
    before = signal.getsignal(signal.SIGINT)
    with jobs.sigint_deferred():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is before


class Job:
    """What the keeper reads of a dask-jobqueue job: its public ``job_id``."""

    def __init__(self, job_id):
        self.job_id = job_id


class Cluster:
    """The public interface of dask-jobqueue's cluster that the keeper uses (SpecCluster's).

    ``scale_down(names)`` forgets the jobs; adaptive scaling, run here by hand with
    :meth:`adapt`, then submits new ones up to the minimum.
    """

    def __init__(self, ids):
        self.workers = {f"c-{i}": Job(job) for i, job in enumerate(ids)}
        self.worker_spec = {name: {} for name in self.workers}
        self.scheduler_info = {"workers": {}}
        self.loop = self
        self.minimum = len(ids)
        self.next_id = 100

    def add_callback(self, fn, *args):
        coroutine = fn(*args)
        with pytest.raises(StopIteration):
            coroutine.send(None)

    async def scale_down(self, names):
        for name in names:
            del self.worker_spec[name], self.workers[name]

    def adapt(self):
        while len(self.worker_spec) < self.minimum:
            self.next_id += 1
            name = f"c-{self.next_id}"
            self.worker_spec[name], self.workers[name] = {}, Job(str(self.next_id))

    def join(self, *names):
        self.scheduler_info["workers"] = {f"tls://{n}": {"name": n} for n in names}


def keeper_for(cluster, queue, monkeypatch, said):
    monkeypatch.setattr(
        jobs, "job_states", lambda system, ids: {i: queue[i] for i in ids if i in queue}
    )
    return jobs.JobKeeper(cluster, jobs.JobTracker("slurm", "scancel"), "SLURM", 2, "/logs",
                          said.append)  # fmt: skip


def test_the_job_keeper_replaces_ended_jobs_and_stops_a_crash_loop(monkeypatch):
    interrupted = []
    monkeypatch.setattr(jobs.signal, "pthread_kill", lambda *args: interrupted.append(args))
    queue = {"1": "RUNNING", "2": "RUNNING"}
    said = []
    cluster = Cluster(["1", "2"])
    keeper = keeper_for(cluster, queue, monkeypatch, said)
    cluster.join("c-0", "c-1")  # both jobs have their worker
    assert keeper.check() == []
    # the walltime ends job 1: it is given up, adaptive scaling submits job 101
    del queue["1"]
    cluster.join("c-1")
    assert keeper.check() == ["1"]
    assert said[-1] == "SLURM jobs 1 ended; submitting new ones"
    assert sorted(cluster.workers) == ["c-1"] and keeper.early_ends == 0
    cluster.adapt()
    assert [job.job_id for job in cluster.workers.values()] == ["2", "101"]
    # its replacements end before their worker joins, again and again: the run is stopped
    for _ in range(3):
        assert keeper.check() == [str(cluster.next_id)]  # never in the queue
        cluster.adapt()
        if interrupted:
            break
    assert keeper.early_ends == keeper.limit == 3 and len(interrupted) == 1
    assert keeper.fatal == (
        "SLURM jobs keep ending before their workers join (3 in a row, the last 103); see"
        " their output in /logs."
    )
    # a job that dask-jobqueue replaced by itself (same name, new id) is reported once
    assert keeper.check() == [] and said.count("SLURM jobs 1 ended; submitting new ones") == 1


def test_the_job_keeper_reports_a_cluster_without_workers(monkeypatch):
    monkeypatch.setattr(jobs, "REPORT_SECONDS", 0.0)
    said = []
    keeper = keeper_for(Cluster(["7"]), {"7": "PENDING"}, monkeypatch, said)
    keeper.next_report = 0.0
    assert keeper.check() == []
    assert said == ["No workers at the moment: SLURM jobs 7 PENDING"]


def test_dask_jobqueue_options_are_resolved_once_per_run(monkeypatch):
    calls = []
    resolve = jobqueue.BatchOptions.resolve

    def counted(self):
        calls.append(1)
        return resolve(self)

    monkeypatch.setattr(jobqueue.BatchOptions, "resolve", counted)
    from mwr_dask.noise.source import NoiseSource
    from mwr_dask.parallel.clusters import make_cluster

    options = jobqueue.BatchOptions(system="slurm", jobs=2, cores=4, memory="8GiB")
    assert options.problems() == []
    cluster = make_cluster(batch=options)
    assert cluster.memory_problems(NoiseSource(cubesize=32, seed=1)) == []
    assert cluster.planned_workers() == 8
    assert "SLURM: 2 jobs, each 4 cores" in cluster.describe()
    assert "#SBATCH --mem=8G" in cluster.script()
    assert len(calls) == 1
