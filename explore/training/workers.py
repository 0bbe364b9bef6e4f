"""Training worker processes: a run that crashes (segfault, out-of-memory kill) takes down only its worker.

The job manager keeps one long-lived worker process per slot (one per GPU). A worker is a fresh
interpreter, `python -m explore.training.workers`, never a fork of the web server, whose threads (Streamlit's,
torch's) would be copied in a broken state. (multiprocessing's `spawn` start method is fresh too,
but it re-runs the parent's `__main__` in the child, and under `streamlit run` that is the app
script: every worker would run the app's pages without a browser.)

The worker trains one run at a time with the same `execute_run` as the CLI and writes everything to
the run store, which stays the channel to the pages (live curves, progress, results). The parent
talks to it over its standard input and output, one JSON line per message:

  parent → worker   {"runs_root": ..., "run_id": ...}   train this run (end of input: exit)
  worker → parent   {"ready": pid}                       its Stop handler is installed (sent first)
                    {"done": run_id}                     the run ended (its outcome is in the store)

Stop is the signal SIGUSR1, which sets a flag that the training loop checks before every batch. If
the worker dies, its output ends and its exit status says how (`death_message`). A worker keeps its
decoded datasets in memory between runs (`load_bundle`'s cache), and a fresh worker reads them from
the disk cache instead of decoding again (explore.data.disk_cache).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from explore.settings import child_environment, python_path_with

STOP_SIGNAL = signal.SIGUSR1
ROOT = Path(__file__).resolve().parents[1]


def worker_main(device: str | None) -> None:
    """The worker process: train the runs the parent sends, one at a time, until its input ends."""
    stop = threading.Event()
    signal.signal(STOP_SIGNAL, lambda *_: stop.set())
    server = os.getppid()
    # The protocol owns the real stdout; anything else printed (a library's stray print) goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    protocol.write(json.dumps({"ready": os.getpid()}) + "\n")  # from now on a Stop signal is safe to send
    from explore.device import reuse_freed_memory

    # The training-speed malloc settings belong where the training happens, and must be set
    # before any other thread of this process allocates (see reuse_freed_memory).
    reuse_freed_memory()
    # torch and the trainer are imported only now, after the ready line and the malloc settings:
    # the parent hears "ready" at once, and the first allocation already uses the tuned malloc.
    import torch

    from explore.training.execute import execute_run
    from explore.training.store import RunStore

    if device and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))  # stray allocations land on this worker's GPU too
    def should_stop() -> bool:
        # Stop pressed, or the server is gone (this process was re-parented): nobody is left to
        # watch or queue after this run, so end it (as 'stopped') instead of training on unseen.
        return stop.is_set() or os.getppid() != server

    for line in sys.stdin:
        job = json.loads(line)
        try:
            for _ in execute_run(RunStore(job["runs_root"]), job["run_id"], should_stop, device=device):
                pass
        finally:
            stop.clear()  # before saying done: a Stop for the next run can only come after this
            protocol.write(json.dumps({"done": job["run_id"]}) + "\n")


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
    """The parent's handle on one worker process (used by one manager thread at a time)."""

    def __init__(self, device: str | None):
        self.device = device
        env = child_environment({"PYTHONPATH": python_path_with(str(ROOT))})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "explore.training.workers", device or ""], cwd=os.getcwd(), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        # Until the worker says it is ready, SIGUSR1 would kill it (the default action): hold a Stop back.
        self._lock = threading.Lock()
        self._ready = False
        self._stop_pending = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def request_stop(self) -> None:
        """Stop the current run within one batch (a no-op when the worker is gone)."""
        with self._lock:
            if not self._ready:
                self._stop_pending = True  # sent when the worker says it is ready
                return
        self.process.send_signal(STOP_SIGNAL)  # Popen ignores a process that has already been reaped

    def _mark_ready(self) -> None:
        with self._lock:
            self._ready, pending, self._stop_pending = True, self._stop_pending, False
        if pending:
            self.process.send_signal(STOP_SIGNAL)

    def train(self, runs_root: str, run_id: str, stop_requested: bool = False) -> str | None:
        """Send one run and block until it ends. Returns None when it ended normally, else how the worker died."""
        try:
            self.process.stdin.write(json.dumps({"runs_root": runs_root, "run_id": run_id}) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._dead()
        if stop_requested:  # Stop pressed between leaving the queue and now
            self.request_stop()
        while line := self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "ready" in message:
                self._mark_ready()
            elif message.get("done") == run_id:
                return None
        return self._dead()  # end of output: the worker is gone

    def _dead(self) -> str:
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()  # it closed its output but lives on: end it, it cannot be trusted with runs
            self.process.wait(timeout=5)
        return death_message(self.process.returncode)

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.process.stdin.close()  # end of input: the worker exits after its current run
        except OSError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        self.process.stdout.close()


if __name__ == "__main__":
    worker_main(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None)
