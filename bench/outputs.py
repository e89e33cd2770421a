"""Standard output and error that outlive their reader.

``bench run … 2>&1 | tee log`` and then Ctrl-C: the terminal sends SIGINT to ``tee`` as well,
``tee`` dies first, and the run's next write to the pipe fails (EPIPE; on a terminal that
has gone away, EIO). Left alone, that write would kill the run before it could checkpoint.
``outlive_readers()`` wraps both streams: the first write whose reader is gone sends that
stream and its file descriptor to ``os.devnull`` and raises SIGPIPE in this process, which
the training loop takes, like SIGTERM, as a request to checkpoint and stop
(``bench.train.stop_signals``). Outside the loop the run goes on, silently.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Any, TextIO

GONE = (errno.EPIPE, errno.EIO)  # a closed pipe; a terminal that has gone away


class OutlivingStream:
    """``stream``, whose writes and flushes survive its reader going away."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.reader_gone = stream, False

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as error:
            self._gone(error)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as error:
            self._gone(error)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, …
        return getattr(self.stream, name)

    def _gone(self, error: OSError) -> None:
        if error.errno not in GONE:
            raise error
        if self.reader_gone:
            return
        self.reader_gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:  # C-level writes and child processes on this descriptor are silenced too
            os.dup2(devnull, self.stream.fileno())
        except (OSError, ValueError):
            pass
        finally:
            os.close(devnull)
        self.stream = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
        signal.raise_signal(signal.SIGPIPE)


def outlive_readers() -> None:
    """Wrap stdout and stderr (once), and let a broken pipe raise an error rather than end
    the process, so the wrappers see it."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # Python's own default
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, OutlivingStream):
            setattr(sys, name, OutlivingStream(stream))
