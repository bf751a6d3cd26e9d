"""One writer per trace, and a trace whose writer is gone is told apart from a running one.

The process that writes a trace (rank 0) holds an advisory ``flock`` on ``<trace>.lock`` for the whole
run; the file names the writer (pid, host, start) and carries a heartbeat, rewritten at every flush of
the trace. A second run on the same trace finds the lock held and stops with a message naming the
first. A reader that finds the status ``running`` tests the lock: if nobody holds it (the writer was
killed with SIGKILL, its node lost, its file-size limit hit), the trace is reported as ``failed: writer
lost``. A reader on another host than the writer cannot test a lock (flock does not cross hosts on every
file system); it goes by the heartbeat's age instead (``STALE_SECONDS``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Optional

STALE_SECONDS = 600.0  # a heartbeat older than this, from another host, means the writer is gone
RECORD_BYTES = 640


def lock_path(trace_path: str) -> str:
    return trace_path + ".lock"


class WriterBusy(OSError):
    """The trace is held by another live writer."""


class WriterLock:
    def __init__(self, trace_path: str):
        self.path = lock_path(trace_path)
        self.fd: Optional[int] = None
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.failed = ""  # a final status the trace itself could not take

    def acquire(self) -> "WriterLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never written through a link
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterBusy(f"is being written by {describe(read_holder(self.path))}; wait for that run to end "
                             "or write elsewhere") from None
        except OSError:  # a file system without flock: run unlocked rather than not at all
            os.close(fd)
            return self
        self.fd = fd
        self.beat()
        return self

    def beat(self) -> None:
        """Rewrite the holder record with the current time (the heartbeat)."""
        if self.fd is None:
            return
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()[:100], "started": self.started,
                             "heartbeat": time.time(), "status": self.failed[:300]}).encode()
        os.pwrite(self.fd, record.ljust(RECORD_BYTES), 0)  # one write of a fixed size: never seen half-written

    def note(self, status: str) -> None:
        """Record a final status in the lock file (for a trace that may not be able to take it any more)."""
        self.failed = status
        self.beat()

    def release(self, keep: bool = False) -> None:
        """Drop the lock; ``keep`` leaves the file (with a noted status) for the readers."""
        if self.fd is None:
            return
        if not keep:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None


def read_holder(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read() or b"{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    if not holder:
        return "another process"
    beat = holder.get("heartbeat")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(beat)) if isinstance(beat, (int, float)) else "?"
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since {holder.get('started', '?')}, last " \
           f"heartbeat {when})"


def holder_alive(trace_path: str) -> tuple[bool, dict]:
    """(does a live process hold the trace's lock, the holder record). No lock file: nobody holds it."""
    path = lock_path(trace_path)
    holder = read_holder(path)
    if not os.path.exists(path):
        return False, holder
    if holder.get("host") not in (None, socket.gethostname()):
        beat = holder.get("heartbeat", 0.0)
        return isinstance(beat, (int, float)) and time.time() - beat < STALE_SECONDS, holder
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False, holder
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False, holder
    except BlockingIOError:
        return True, holder
    except OSError:  # no flock here: trust the heartbeat
        beat = holder.get("heartbeat", 0.0)
        return isinstance(beat, (int, float)) and time.time() - beat < STALE_SECONDS, holder
    finally:
        os.close(fd)


def live_status(trace_path: str, status: str) -> str:
    """The status a reader should believe: a 'running' trace whose writer is gone is 'failed: writer lost'."""
    if status != "running":
        return status
    alive, holder = holder_alive(trace_path)
    if alive:
        return status
    if holder.get("status"):  # the writer ended but could not write its status into the trace
        return str(holder["status"])
    if holder:
        return f"failed: writer lost ({describe(holder)})"
    return "failed: writer lost (no process holds the trace; it was killed or its node lost)"
