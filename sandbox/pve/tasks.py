"""Worker tasks as PVE and PBS run them: a UPID, a log, ``running`` until the body ends, then an
exit status taken from the last log line (``TASK OK``, ``TASK WARNINGS: n``, ``TASK ERROR: msg``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_pids = itertools.count(0x2A0000 + os.getpid() % 0x10000 * 8)


class TaskError(Exception):
    """Ends a task with ``TASK ERROR: <message>``."""


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    authid: str
    lines: list[str] = field(default_factory=list)
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    vmids: list[int] = field(default_factory=list)

    @property
    def user(self) -> str:
        return self.authid.split("!", 1)[0]

    @property
    def tokenid(self) -> str | None:
        return self.authid.split("!", 1)[1] if "!" in self.authid else None

    def log(self, line: str) -> None:
        self.lines.append(line)

    def finish(self, exitstatus: str) -> None:
        if exitstatus == "OK":
            self.lines.append("TASK OK")
        elif exitstatus.startswith("WARNINGS: "):
            self.lines.append(f"TASK {exitstatus}")
        else:
            self.lines.append(f"TASK ERROR: {exitstatus}")
        self.exitstatus = exitstatus
        self.status = "stopped"
        self.endtime = int(time.time())

    def status_kind(self) -> str:
        """ok / warning / error / unknown, as PVE's statusfilter classifies exit statuses."""
        if self.exitstatus is None:
            return "unknown"
        if self.exitstatus == "OK":
            return "ok"
        if self.exitstatus.startswith("WARNINGS"):
            return "warning"
        return "error"


TaskBody = Callable[[Task], Awaitable[int | None]]


class TaskManager:
    """Runs task bodies in the background; a body returns a warning count or raises TaskError."""

    def __init__(self, upid_format: Callable[[Task], str], pstart_base: int = 0x0B5E27C1) -> None:
        self._format = upid_format
        self._pstart = pstart_base
        self.tasks: dict[str, Task] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}

    def new(
        self,
        node: str,
        type_: str,
        id_: str,
        authid: str,
        starttime: int | None = None,
        vmids: list[int] | None = None,
    ) -> Task:
        self._pstart += 37
        task = Task(
            upid="",
            node=node,
            pid=next(_pids),
            pstart=self._pstart,
            starttime=int(starttime if starttime is not None else time.time()),
            type=type_,
            id=id_,
            authid=authid,
            vmids=vmids or [],
        )
        task.upid = self._format(task)
        self.tasks[task.upid] = task
        return task

    def add_finished(
        self,
        upid: str,
        node: str,
        type_: str,
        id_: str,
        authid: str,
        starttime: int,
        endtime: int,
        exitstatus: str,
        lines: list[str],
    ) -> Task:
        """A task from before the sandbox started (seeded history under a known UPID)."""
        task = Task(
            upid=upid,
            node=node,
            pid=0,
            pstart=0,
            starttime=starttime,
            type=type_,
            id=id_,
            authid=authid,
            lines=list(lines),
        )
        task.finish(exitstatus)
        task.endtime = endtime
        self.tasks[upid] = task
        return task

    def spawn(
        self,
        node: str,
        type_: str,
        id_: str,
        authid: str,
        body: TaskBody,
        vmids: list[int] | None = None,
    ) -> Task:
        task = self.new(node, type_, id_, authid, vmids=vmids)
        self._running[task.upid] = asyncio.get_running_loop().create_task(self._run(task, body))
        return task

    async def _run(self, task: Task, body: TaskBody) -> None:
        try:
            warnings = await body(task)
        except TaskError as exc:
            task.finish(str(exc) or "unknown error")
        except asyncio.CancelledError:
            task.finish("interrupted by signal")
        except Exception as exc:  # a bug in a body must still end the task like PVE would
            task.finish(f"{type(exc).__name__}: {exc}")
        else:
            task.finish(f"WARNINGS: {warnings}" if warnings else "OK")
        finally:
            self._running.pop(task.upid, None)

    def cancel(self, upid: str) -> bool:
        running = self._running.get(upid)
        if running is None:
            return False
        running.cancel()
        return True

    def running(self) -> list[Task]:
        return [t for t in self.tasks.values() if t.status == "running"]

    async def close(self) -> None:
        for t in list(self._running.values()):
            t.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
