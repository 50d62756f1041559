"""The one workaround of the Dask layer: importing dask-jobqueue without its side effects.

On import, dask-jobqueue (0.8, 0.9)

- calls ``dask.config.ensure_file`` to copy its template to ``~/.config/dask/jobqueue.yaml``
  (or ``$DASK_CONFIG``): a command that submits jobs would write into the user's home;
- replaces the SIGINT handler with ``sys.exit()`` (``dask_jobqueue/runner.py``), which turns
  Ctrl-C into a successful exit.

Neither has a switch. :func:`import_dask_jobqueue` stands in a no-op for
``dask.config.ensure_file`` during the import (dask-jobqueue's defaults still enter the dask
configuration in memory) and puts the previous SIGINT handler back. Nothing else of the
package touches another library's module.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import ModuleType


def import_dask_jobqueue() -> ModuleType:
    """Import ``dask_jobqueue`` (once) without writing a file or changing the SIGINT handler."""
    if "dask_jobqueue" in sys.modules:
        return sys.modules["dask_jobqueue"]
    import dask.config

    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    ensure_file = dask.config.ensure_file
    dask.config.ensure_file = lambda *args, **kwargs: None  # writes nothing
    try:
        import dask_jobqueue
    finally:
        dask.config.ensure_file = ensure_file
        if main_thread and sigint is not None:
            signal.signal(signal.SIGINT, sigint)
    return dask_jobqueue
