"""One writer per record: a claim file with a heartbeat, safe on cluster filesystems.

Why not ``flock``: on NFS, Lustre or GPFS a file lock may be advisory, local to one node,
or absent, and a lock held by a dead node can outlive it. A claim is a plain file instead,
``claim.<generation>.json`` in the record's folder, naming its holder (host, pid, SLURM job,
when it started) and carrying a heartbeat that a thread of the holder rewrites every
``heartbeat_s`` seconds. Only the highest generation counts.

Taking a claim means creating the next generation's file. It is created by hard-linking a
complete temporary file to its name, which succeeds for exactly one process even over NFS
(the classic NFS-safe lock file), so two claimants can never both win, and a reader never
sees a half-written claim. The claim is free when the highest generation was released, or
is stale:

- its holder runs on this host and its process is gone (a killed ``bench run``);
- its holder is this SLURM job, requeued (SLURM keeps the job id; the old process is gone);
- its heartbeat is older than the ``stale_after_s`` the holder wrote into it (a holder
  killed on another node). This compares the holder's clock with ours: cluster nodes keep
  NTP time, and the default limit (5 minutes) dwarfs any skew.

A holder whose claim was taken over (it was frozen past its stale limit) notices at its
next heartbeat: ``lost`` turns true and the runner stops without writing to the record.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.fileio import atomic_write_json, umask_mode

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
HELD, RELEASED = "held", "released"


class ClaimLost(Exception):
    """Another process took this claim over: the holder must stop writing the record."""


@dataclass
class Holder:
    """What a claim file says about the process that holds it."""

    host: str
    pid: int
    token: str
    started: float
    heartbeat: float
    stale_after_s: float
    state: str = HELD
    slurm_job: str | None = None

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        job = f" (SLURM job {self.slurm_job})" if self.slurm_job else ""
        return f"{self.host}:{self.pid}{job} since {since}"

    def is_stale(self) -> bool:
        if self.state == RELEASED:
            return True
        if self.host == platform.node() and not _process_alive(self.pid):
            return True
        if self.slurm_job is not None and self.slurm_job == slurm_job_id():
            return True  # this job, requeued: the process that held it is gone
        return time.time() - self.heartbeat > self.stale_after_s


def slurm_job_id() -> str | None:
    """This process's SLURM job (``<array job>_<task>`` for an array task), if any."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    if pid == os.getpid():
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def _generation(path: Path) -> int:
    return int(path.name.split(".")[1])


def _claim_files(folder: Path) -> list[Path]:
    files = [p for p in folder.glob("claim.*.json") if p.name.split(".")[1].isdigit()]
    return sorted(files, key=_generation)


def _read(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # gone meanwhile, or not a claim we wrote
        return None


def current_holder(folder: Path | str) -> tuple[int, Holder | None]:
    """The highest generation in ``folder`` and its holder (None: no claim yet)."""
    files = _claim_files(Path(folder))
    if not files:
        return -1, None
    return _generation(files[-1]), _read(files[-1])


def active_holder(folder: Path | str) -> Holder | None:
    """Who holds the claim on ``folder`` now; None when it is free (no claim, released, stale)."""
    _, holder = current_holder(folder)
    return None if holder is None or holder.is_stale() else holder


class Claim:
    """A claim on one record folder: ``try_acquire``/``acquire``, then ``release``.

    While held, a daemon thread rewrites the heartbeat every ``heartbeat_s`` seconds."""

    def __init__(
        self,
        folder: Path | str,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.folder = Path(folder)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.generation: int | None = None
        self.holder: Holder | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> Holder | None:
        """Take the claim if it is free; returns None when taken, else who holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            generation, holder = current_holder(self.folder)
            if holder is None and generation >= 0:
                time.sleep(0.05)  # a claim file unreadable for a moment (being replaced)
                generation, holder = current_holder(self.folder)
            if holder is not None and not holder.is_stale():
                return holder
            now = time.time()
            mine = Holder(
                host=platform.node(),
                pid=os.getpid(),
                token=uuid.uuid4().hex,
                started=now,
                heartbeat=now,
                stale_after_s=self.stale_after_s,
                slurm_job=slurm_job_id(),
            )
            if self._create(generation + 1, mine):
                self.generation, self.holder, self.lost = generation + 1, mine, False
                self._forget_old_generations()
                self._start_heartbeat()
                return None
            # Another claimant made that generation first: look again.

    def acquire(
        self,
        wait: bool = True,
        poll_s: float = 2.0,
        on_wait: Callable[[Holder], None] | None = None,
    ) -> Holder | None:
        """Take the claim, waiting while another live process holds it (``on_wait(holder)``
        is called once, to say so). With ``wait=False``: returns the holder instead."""
        told = False
        while True:
            holder = self.try_acquire()
            if holder is None or not wait:
                return holder
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(poll_s)

    def check(self) -> None:
        """Raise ``ClaimLost`` if another process took this claim over."""
        if self.lost:
            raise ClaimLost(f"{self.folder} was taken over by {self._taker()}")

    def release(self) -> None:
        """Mark the claim released (when still ours) and stop the heartbeat."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.holder is not None and self._still_mine():
            self.holder.state = RELEASED
            self._rewrite()
        self.holder = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # --- internals ------------------------------------------------------------------------

    def _path(self, generation: int) -> Path:
        return self.folder / f"claim.{generation}.json"

    def _create(self, generation: int, holder: Holder) -> bool:
        """Create ``claim.<generation>.json`` with ``holder`` in it, unless it exists."""
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".claim.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(asdict(holder)))
            os.chmod(tmp, umask_mode())
            os.link(tmp, self._path(generation))
        except FileExistsError:
            return False
        except OSError as error:
            raise BenchError(
                f"cannot claim {self.folder}: {error.strerror} (claims need a filesystem with "
                "hard links, as NFS, Lustre, GPFS and local disks have); use another --out"
            ) from None
        finally:
            os.unlink(tmp)
        return True

    def _still_mine(self) -> bool:
        generation, holder = current_holder(self.folder)
        return (
            generation == self.generation
            and holder is not None
            and self.holder is not None
            and holder.token == self.holder.token
        )

    def _taker(self) -> str:
        _, holder = current_holder(self.folder)
        return holder.describe() if holder is not None else "another process"

    def _forget_old_generations(self) -> None:
        # The previous generation stays: a claimant that still lists it as the highest then
        # fails to create ours (it exists) instead of taking the claim a second time.
        for path in _claim_files(self.folder):
            if _generation(path) < self.generation - 1:
                path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="bench-claim", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._still_mine():
                self.lost = True
                return
            self.holder.heartbeat = time.time()
            self._rewrite()

    def _rewrite(self) -> None:
        """Replace our claim file with ``self.holder`` (atomically: readers see old or new)."""
        atomic_write_json(self._path(self.generation), asdict(self.holder))


def say_waiting(path: Path, holder: Holder) -> None:
    """The line a process prints while it waits for another's claim on ``path`` to go."""
    print(
        f"{path} is being trained by {holder.describe()}; waiting for it (its claim lapses "
        f"{holder.stale_after_s:.0f} s after its last heartbeat)",
        file=sys.stderr,
    )
