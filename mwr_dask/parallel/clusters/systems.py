"""What mwr-dask knows of each batch system: one :class:`System` entry per system.

Adding a batch system that dask-jobqueue supports is one entry in :data:`SYSTEMS`: its
dask-jobqueue class, its name in messages, the prefix of its job directives, and how to ask it
which jobs are still queued or running. Nothing here imports Dask.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

#: A status query: job ids -> {id: state} for the jobs not ended yet, None if it cannot tell.
StatusQuery = Callable[[list[str]], "dict[str, str] | None"]


def run_status(argv: list[str]) -> str | None:
    """Return the standard output of a status command, or None if it cannot run."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 and not proc.stdout.strip():
        # e.g. squeue -j for jobs it has forgotten: "Invalid job id specified"
        if re.search(r"invalid job id|unknown job|do not exist|not found", proc.stderr, re.I):
            return ""
        return None
    return proc.stdout


def table_states(out: str, ids: list[str], state_col: int, ended: set[str]) -> dict[str, str]:
    """States from a table whose first column is the job id (``123`` or ``123.server``)."""
    states = {}
    for line in out.splitlines():
        tokens = line.split()
        if len(tokens) <= state_col:
            continue
        job = tokens[0].split(".")[0].rstrip(":")
        if job in ids and tokens[state_col] not in ended:
            states[job] = tokens[state_col]
    return states


def slurm_states(ids: list[str]) -> dict[str, str] | None:
    """``squeue``: state and, for pending jobs, the reason (``PENDING (Resources)``)."""
    out = run_status(["squeue", "-h", "-o", "%i|%T|%r", "-j", ",".join(ids)])
    if out is None:
        return None
    states = {}
    for line in out.splitlines():
        job, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job in ids:
            reason = reason.strip()
            states[job] = state + (f" ({reason})" if reason and reason != "None" else "")
    return states


def table_query(argv: Callable[[list[str]], list[str]], col: int, ended: set[str]) -> StatusQuery:
    """Return a status query that runs ``argv(ids)`` and reads the state in column ``col``."""

    def query(ids: list[str]) -> dict[str, str] | None:
        out = run_status(argv(ids))
        return None if out is None else table_states(out, ids, col, ended)

    return query


#: HTCondor's ``JobStatus`` codes.
HTCONDOR_STATES = {"1": "Idle", "2": "Running", "3": "Removed", "4": "Completed", "5": "Held",
                   "6": "Transferring", "7": "Suspended"}  # fmt: skip


def htcondor_states(ids: list[str]) -> dict[str, str] | None:
    """``condor_q -af ClusterId ProcId JobStatus``, job ids as ``cluster.proc``."""
    out = run_status(["condor_q", *ids, "-af", "ClusterId", "ProcId", "JobStatus"])
    if out is None:
        return None
    states = {}
    for line in out.splitlines():
        tokens = line.split()
        if len(tokens) == 3 and f"{tokens[0]}.{tokens[1]}" in ids:
            state = HTCONDOR_STATES.get(tokens[2], tokens[2])
            if state not in ("Removed", "Completed"):
                states[f"{tokens[0]}.{tokens[1]}"] = state
    return states


def oar_states(ids: list[str]) -> dict[str, str] | None:
    """``oarstat -s -j ID`` for each job."""
    states = {}
    for job in ids:
        out = run_status(["oarstat", "-s", "-j", job])
        if out is None:
            return None
        for line in out.splitlines():
            key, _, state = line.partition(":")
            state = state.strip()
            if key.strip() == job and state and state not in ("Terminated", "Error"):
                states[job] = state
    return states


@dataclass(frozen=True)
class System:
    """One batch system.

    ``key``: its ``--cluster`` name and its section in dask-jobqueue's config
    (``jobqueue.<key>``); ``class_name``: dask-jobqueue's cluster class; ``display``: its name
    in messages; ``directive``: the prefix of a job directive (what ``--job-extra`` leaves out);
    ``states``: a :data:`StatusQuery`; ``cancel``: the command that cancels jobs by id.
    """

    key: str
    class_name: str
    display: str
    directive: str
    states: StatusQuery
    cancel: str


SYSTEMS: dict[str, System] = {
    s.key: s
    for s in (
        System("slurm", "SLURMCluster", "SLURM", "#SBATCH", slurm_states, "scancel"),
        System("pbs", "PBSCluster", "PBS", "#PBS",
               table_query(lambda ids: ["qstat", *ids], 4, {"C", "F"}), "qdel"),
        System("sge", "SGECluster", "SGE", "#$",
               table_query(lambda ids: ["qstat"], 4, set()), "qdel"),
        System("lsf", "LSFCluster", "LSF", "#BSUB",
               table_query(lambda ids: ["bjobs", "-w", *ids], 2, {"DONE", "EXIT"}), "bkill"),
        System("htcondor", "HTCondorCluster", "HTCondor", "", htcondor_states, "condor_rm"),
        System("oar", "OARCluster", "OAR", "#OAR", oar_states, "oardel"),
        System("moab", "MoabCluster", "Moab", "#PBS",
               table_query(lambda ids: ["qstat", *ids], 4, {"C", "F"}), "canceljob"),
    )
}  # fmt: skip


def job_states(system: str, ids: list[str]) -> dict[str, str] | None:
    """Ask batch system ``system`` about jobs ``ids``: {id: state} for those not ended yet.

    Returns None if the system is unknown or its status command is missing or fails.
    """
    entry = SYSTEMS.get(system)
    return None if entry is None else entry.states(ids)
