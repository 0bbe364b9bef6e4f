"""A fair queue for a classroom: one FIFO per session, served round-robin.

With one FIFO for everybody, a student who queues a 20-run sweep puts the whole class behind
those 20 runs. Here each session (run namespace) has its own FIFO, and a free worker serves the
session that was served least recently (a session never served goes first, in order of arrival).
So a student's run waits behind at most one run of each other student, however many a classmate
queued.

A plain data structure with no threads: `JobManager` holds its lock while calling it.
"""
from __future__ import annotations

import itertools
from collections import deque
from typing import Generic, Iterator, Protocol, TypeVar


class Queued(Protocol):
    run_id: str
    namespace: str


JobT = TypeVar("JobT", bound=Queued)


class FairQueue(Generic[JobT]):
    def __init__(self):
        self._fifos: dict[str, deque[JobT]] = {}
        self._arrival: dict[str, int] = {}      # when a session first queued (ties among the never served)
        self._last_served: dict[str, int] = {}  # the turn at which a session last had a run started
        self._counter = itertools.count()

    def __len__(self) -> int:
        return sum(len(fifo) for fifo in self._fifos.values())

    def push(self, job: JobT) -> None:
        if job.namespace not in self._fifos:
            self._fifos[job.namespace] = deque()
            self._arrival.setdefault(job.namespace, next(self._counter))
        self._fifos[job.namespace].append(job)

    def pop(self) -> JobT | None:
        """The next run to start, or None when nothing waits."""
        namespace = self._next_namespace(self._fifos, self._last_served)
        if namespace is None:
            return None
        job = self._fifos[namespace].popleft()
        if not self._fifos[namespace]:
            del self._fifos[namespace]
        self._last_served[namespace] = next(self._counter)
        return job

    def remove(self, run_id: str) -> JobT | None:
        """Take a waiting run off the queue (Stop before it started); None when it is not waiting."""
        for namespace, fifo in self._fifos.items():
            for job in fifo:
                if job.run_id == run_id:
                    fifo.remove(job)
                    if not fifo:
                        del self._fifos[namespace]
                    return job
        return None

    def order(self) -> list[JobT]:
        """Every waiting run in the order they will start (if nothing else is queued meanwhile)."""
        return list(self._simulate())

    def by_namespace(self) -> dict[str, list[str]]:
        return {namespace: [job.run_id for job in fifo] for namespace, fifo in self._fifos.items()}

    def count(self, namespace: str) -> int:
        return len(self._fifos.get(namespace, ()))

    # ----- the rule, shared by pop() and order() ---------------------------------------------
    def _next_namespace(self, fifos: dict[str, deque], last_served: dict[str, int]) -> str | None:
        waiting = [namespace for namespace, fifo in fifos.items() if fifo]
        if not waiting:
            return None
        return min(waiting, key=lambda ns: (last_served.get(ns, -1), self._arrival[ns]))

    def _simulate(self) -> Iterator[JobT]:
        fifos = {namespace: deque(fifo) for namespace, fifo in self._fifos.items()}
        last_served = dict(self._last_served)
        turn = max(last_served.values(), default=0)
        while (namespace := self._next_namespace(fifos, last_served)) is not None:
            turn += 1
            last_served[namespace] = turn
            yield fifos[namespace].popleft()
