"""Progress that a person sees wherever the output goes.

On a terminal, a tqdm bar. Elsewhere (a SLURM log, nohup, CI) tqdm would stay silent or fill
the file with carriage returns, so a plain line goes out every ``every_s`` seconds instead,
and one at the end::

    training: step 1200/300000 (0.4%), 3m12s elapsed, eta 13h05m; loss=0.0123 img_s=211

This module imports no torch: evaluation and metrics use it too.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

# Messages of long computations (exact DCI's per-factor fits) go to this logger; evaluation
# shows them on stderr while it runs.
log = logging.getLogger("bench.progress")


def is_terminal() -> bool:
    return sys.stderr.isatty()


class Progress:
    """Counts ``total`` units from ``initial``: a bar on a terminal, timed lines elsewhere."""

    def __init__(
        self,
        total: int,
        desc: str,
        initial: int = 0,
        enabled: bool = True,
        every_s: float = 60.0,
        unit: str = "step",
    ) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n, self.start_n = initial, initial
        self.enabled = enabled
        self.postfix: dict[str, Any] = {}
        self.started = self.last_line = time.monotonic()
        self.bar = (
            tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr)
            if enabled and is_terminal()
            else None
        )

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last_line >= self.every_s:
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n > self.start_n:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        done = self.n - self.start_n
        eta = (self.total - self.n) * elapsed / done if done else float("nan")
        fraction = 100 * self.n / self.total if self.total else 100.0
        text = (
            f"{self.desc}: {self.unit} {self.n}/{self.total} ({fraction:.1f}%), "
            f"{tqdm.format_interval(elapsed)} elapsed"
        )
        if self.n < self.total and done:
            text += f", eta {tqdm.format_interval(eta)}"
        if self.postfix:
            text += "; " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(text, file=sys.stderr, flush=True)
        self.last_line = now

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def progress_messages() -> Iterator[None]:
    """Show ``bench.progress`` messages on stderr for the block (and only for it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
