"""Training worker processes: a run that crashes (segfault, out-of-memory kill) takes down only its worker.

The job manager keeps one long-lived worker process per slot (one per GPU). Each worker is started
with multiprocessing's `spawn` context: a fresh interpreter, never a fork of the web server, whose
threads (Streamlit's, torch's) would be copied in a broken state. The worker trains one run at a
time with the same `execute_run` as the CLI and writes everything to the run store, which stays the
channel to the pages (live curves, progress, results). The parent talks to it over a pipe:

  parent → worker   (runs_root, run_id)     train this run; None: exit
  worker → parent   ("done", run_id)        the run ended (its outcome is in the store)

Stop uses a `multiprocessing.Event` that the training loop checks before every batch. If the
worker dies, the pipe and the process sentinel tell the parent at once; `death_message` says how.
A worker keeps its decoded datasets in memory between runs (`load_bundle`'s cache), and a fresh
worker reads them from the disk cache instead of decoding again (explore.data.disk_cache).
"""
from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import wait


def worker_main(conn, stop_event, device: str | None) -> None:
    """The worker process: train the runs the parent sends, one at a time, until told to exit."""
    import torch

    from explore.device import reuse_freed_memory
    from explore.jobs import execute_run
    from explore.store import RunStore

    # The training-speed malloc settings belong where the training happens, and must be set
    # before any thread of this process allocates (see reuse_freed_memory).
    reuse_freed_memory()
    if device and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))  # stray allocations land on this worker's GPU too
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the server went away: nothing left to work for
            return
        if message is None:
            return
        runs_root, run_id = message
        try:
            for _ in execute_run(RunStore(runs_root), run_id, stop_event.is_set, device=device):
                pass
        finally:
            conn.send(("done", run_id))


def death_message(exitcode: int | None) -> str:
    """How a worker process ended, in words a student can act on."""
    if exitcode is None:
        return "the worker process training this run stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        text = f"the worker process training this run died: killed by {name} (signal {-exitcode})"
        if -exitcode == signal.SIGKILL:
            text += "; on a server this is usually the out-of-memory killer: try a smaller batch or image size"
        elif -exitcode == signal.SIGSEGV:
            text += " (a crash in native code)"
        return text
    return f"the worker process training this run died: it exited with code {exitcode}"


class WorkerProcess:
    """The parent's handle on one worker process."""

    def __init__(self, device: str | None):
        context = multiprocessing.get_context("spawn")
        self.device = device
        self.stop_event = context.Event()
        self._conn, child_conn = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child_conn, self.stop_event, device),
                                       name="explore-trainer", daemon=True)
        self.process.start()
        child_conn.close()  # only the child holds its end: when the child dies, our end sees EOF

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def train(self, runs_root: str, run_id: str) -> str | None:
        """Send one run and block until it ends. Returns None when it ended normally, else why the worker died.
        (The caller clears `stop_event` before: a Stop pressed in between must not be lost.)"""
        try:
            self._conn.send((runs_root, run_id))
        except (BrokenPipeError, OSError):
            return self._dead()
        while True:
            ready = wait([self._conn, self.process.sentinel])
            if self._conn in ready:
                try:
                    kind, finished_id = self._conn.recv()
                except (EOFError, OSError):
                    return self._dead()
                if kind == "done" and finished_id == run_id:
                    return None
            elif self.process.sentinel in ready:
                return self._dead()

    def _dead(self) -> str:
        self.process.join(timeout=5)
        return death_message(self.process.exitcode)

    def close(self, timeout: float = 5.0) -> None:
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self._conn.close()
