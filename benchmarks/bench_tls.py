"""Start-up cost of TLS with per-run keys: a local cluster started and closed, TLS vs plain.

For each repeat, in an order that alternates between repeats (so that the machine's load
falls on both alike): start ``LocalCluster(ncpus).client()`` (workers spawned, client
connected, the worker check registered), then close it; the wall time of each step and of
``Security.temporary()`` alone. Prints medians and the ratio TLS / plain.

    PYTHONPATH=. python benchmarks/bench_tls.py --ncpus 2 --repeats 6
"""

from __future__ import annotations

import argparse
import statistics
import time


def once(tls: bool, ncpus: int) -> tuple[float, float]:
    """Seconds to start (and check) and to close a local cluster."""
    from mwr_dask.parallel.clusters.local import LocalCluster

    cluster = LocalCluster(ncpus, dashboard_address=None, tls=tls)
    t0 = time.perf_counter()
    with cluster.client() as client:
        client.wait_for_workers(ncpus)
        cluster.check(client)
        t1 = time.perf_counter()
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    """Run the comparison and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ncpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    from distributed.security import Security

    from mwr_dask.parallel.clusters.local import run_keys, tls_security

    def temporary_security():
        return tls_security(*run_keys())

    keys: dict[str, list[float]] = {"rsa": [], "ec": []}
    for _ in range(args.repeats):
        for kind, make in (("rsa", Security.temporary), ("ec", temporary_security)):
            t0 = time.perf_counter()
            make()
            keys[kind].append(time.perf_counter() - t0)
    once(True, args.ncpus)  # warm the imports and the file cache
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for k in range(args.repeats):
        for tls in (True, False) if k % 2 == 0 else (False, True):
            times[tls].append(once(tls, args.ncpus))
    med = {tls: [statistics.median(t[i] for t in v) for i in (0, 1)] for tls, v in times.items()}
    print(f"| local cluster, {args.ncpus} workers, median of {args.repeats} | start | close |")
    print("|---|---|---|")
    for tls, name in ((False, "plain tcp://"), (True, "TLS, per-run keys")):
        print(f"| {name} | {med[tls][0]:.2f} s | {med[tls][1]:.2f} s |")
    print(f"| ratio TLS / plain | {med[True][0] / med[False][0]:.2f} |"
          f" {med[True][1] / med[False][1]:.2f} |")  # fmt: skip
    rsa, ec = (statistics.median(keys[k]) * 1e3 for k in ("rsa", "ec"))
    print(f"keys alone, median: Security.temporary() (RSA 2048) {rsa:.1f} ms,"
          f" run_keys() + tls_security() (EC P-256) {ec:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
