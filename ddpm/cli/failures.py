"""How a command of `ddpm` ends when it cannot finish: one line on stderr and an exit status.

Every foreseeable failure falls in one class with one status, listed in `EXIT_STATUS` (the help's
epilog): the input (data, a checkpoint, an output path, a run that diverged), the command line,
the system (disk full, a read-only or unreadable location), memory, or a stop signal. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from ddpm.signals import STOP_SIGNALS

INPUT = 1  # the data, a checkpoint, an output path or the settings cannot be used as given
USAGE = 2  # the command line itself (argparse's own status)
SYSTEM = 3  # the system refused to read or write a file: disk full, read-only, no permission
MEMORY = 4  # out of memory (the CPU's or the accelerator's)

EXIT_STATUS = (
    "exit status: 0 done; 1 the data, a checkpoint, an output path or a setting cannot be used; "
    "2 a bad command line; 3 a file could not be read or written (disk full, read-only, no "
    "permission); 4 out of memory; 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM, "
    "129 SIGHUP), with what was finished kept. Each failure is one line on stderr."
)

# What to do about the commonest refusals of the file system.
_ADVICE = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "the location is read-only: write elsewhere",
    errno.EACCES: "check the permissions of the location, or use another",
    errno.EPERM: "check the permissions of the location, or use another",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder, not a file",
    errno.EEXIST: "a file of that name is in the way",
}
# Refusals that say the path itself cannot be one: the input's fault, not the system's.
PATH_ERRORS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT})


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; `kept` says what the command kept of its work (set by the command
    as the exception passes through it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.kept = "files already written are kept"


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While active, SIGINT, SIGTERM and SIGHUP raise `Stopped` in the main thread, so that the
    command can keep what it has done; a second signal gets the handler that was there before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def stop(signum, frame):
        restore()
        raise Stopped(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        restore()


def describe_os_error(err: OSError, where: str | Path | None) -> str:
    """'<file>: <reason> (<advice>)' for a refusal of the file system; `where` names the place
    when the error does not (a write that fails after its file was opened)."""
    name = err.filename if err.filename is not None else where
    reason = err.strerror or str(err)
    advice = _ADVICE.get(err.errno)
    text = f"{name}: {reason}" if name is not None else reason
    return f"{text} ({advice})" if advice else text


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError (the CPU) or torch's OutOfMemoryError (an accelerator)."""
    if isinstance(err, MemoryError):
        return True
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(err, oom)
