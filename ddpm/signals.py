"""The signals that ask the package's long work to stop (no torch: the command line's help and
its failure handling import this without loading torch).

Ctrl-C (SIGINT), a polite kill (SIGTERM: `timeout`, `docker stop`, Kubernetes, SLURM) and a
closed terminal (SIGHUP, which does not exist on Windows). `ddpm.train` finishes the step and
checkpoints it on any of them; `ddpm.cli.failures` turns them into exit status 128 + N.
"""

from __future__ import annotations

import signal

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
