"""The background processes of simulated hosts (``cmd &``, systemd-run), keyed by host and pid:
the part of :class:`sandbox.fleet.shell.Runtime` every runtime that runs shells needs (the SSH
fleet, PVE's guest agent)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any


class HostJobs:
    """Background jobs per host; each outlives the session that started it and ends with the
    host (:meth:`end_jobs`) or when its coroutine returns."""

    def __init__(self, first_pid: int) -> None:
        self._jobs: dict[str, dict[int, asyncio.Task[Any]]] = {}
        self._pids = itertools.count(first_pid)

    def session_pid(self, host: str) -> int:
        return next(self._pids)

    def start_job(self, host: str, run: Callable[[int], Awaitable[int]]) -> int:
        pid = next(self._pids)
        jobs = self._jobs.setdefault(host, {})
        task = asyncio.ensure_future(run(pid))
        jobs[pid] = task
        task.add_done_callback(lambda _t: jobs.pop(pid, None))
        return pid

    def job_alive(self, host: str, pid: int) -> bool:
        task = self._jobs.get(host, {}).get(pid)
        return task is not None and not task.done()

    def stop_job(self, host: str, pid: int) -> None:
        task = self._jobs.get(host, {}).get(pid)
        if task is not None:
            task.cancel()

    def end_jobs(self, host: str) -> None:
        for task in list(self._jobs.get(host, {}).values()):
            task.cancel()

    def hosts_with_jobs(self) -> list[str]:
        return list(self._jobs)
