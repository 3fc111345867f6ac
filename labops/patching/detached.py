"""A long command run detached on a host, and the parser of its poll.

A node's dist-upgrade can outlast any SSH command timeout, and a timeout that closes the channel
must never take dpkg down with it. So the upgrade runs on the host itself, apart from the SSH
session: as a transient systemd unit (``systemd-run --unit labops-upgrade --collect``) where
systemd is PID 1, else under ``nohup ... &``. Either way one small script on the host
(:data:`SCRIPT`) writes its pid, the command's output and, at the end, its exit status, so a
poll over SSH (:data:`POLL_COMMAND`, read-only) tells running, finished (with the status) or
gone without a status. A second upgrade is never started beside a running one: the caller
polls first and adopts what runs (a retry, or a re-run after a killed flow), and systemd refuses
a second unit of the same name anyway.
"""

from __future__ import annotations

import re
import shlex

from pydantic import BaseModel, Field

from labops.patching.hostcheck import MARK, split_sections

UNIT = "labops-upgrade"
DIR = "/var/lib/labops"
SCRIPT = f"{DIR}/upgrade.sh"
LOG = f"{DIR}/upgrade.log"
STATUS = f"{DIR}/upgrade.rc"
JOB = f"{DIR}/upgrade.job"
PID = "/run/labops-upgrade.pid"  # /run is emptied at boot: a pid there is from this boot
BUSY = f"{UNIT}: an upgrade is running; not started again"
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _script(command: str) -> str:
    # `$$` is the pid of the shell running the script: the unit's main process, or the nohup'ed
    # job; the command runs in its own sh so that an `exit` in it cannot skip the status line.
    return (
        f"echo $$ > {PID}; sh -c {shlex.quote(command)} >> {LOG} 2>&1; "
        f"echo $? > {STATUS}.new && mv {STATUS}.new {STATUS}"
    )


def start_command(job: str, command: str, systemd: bool) -> str:
    """The command that starts ``command`` detached and returns at once (CHANGES THE HOST).

    ``job`` names the run that started it (kept in :data:`JOB`, shown when a later run adopts
    it). The previous status and log are cleared first, so a poll never reads an old result;
    but never while an upgrade runs (another run may have started one since this run's poll):
    then it exits 1 with :data:`BUSY` and leaves that upgrade's pid, job and log as they are.
    """
    if not _JOB_ID.fullmatch(job):
        raise ValueError(f"job id {job!r}: letters, digits, . _ - only")
    busy = (
        f"systemctl is-active --quiet {UNIT}"
        if systemd
        else f'! test -e {STATUS} && read pid 2>/dev/null < {PID} && kill -0 "$pid" 2>/dev/null'
    )
    guard = f"{busy} && echo {shlex.quote(BUSY)} >&2 && exit 1; "
    prepare = guard + (
        f"mkdir -p {DIR} && rm -f {STATUS} {PID} && printf '%s\\n' {shlex.quote(_script(command))} "
        f"> {SCRIPT} && echo {job} > {JOB} && : > {LOG}"
    )
    if systemd:
        return f"{prepare} && systemd-run --unit={UNIT} --collect --quiet sh {SCRIPT}"
    return f"{prepare} || exit 1; nohup sh {SCRIPT} > /dev/null 2>&1 < /dev/null &"


POLL_COMMAND = "; ".join(
    [
        f"echo {MARK}job",
        f"cat {JOB} 2>/dev/null",
        f"echo {MARK}status",
        f"cat {STATUS} 2>/dev/null",
        f"echo {MARK}pid",
        f"cat {PID} 2>/dev/null",
        f"echo {MARK}alive",
        f'read pid 2>/dev/null < {PID} && kill -0 "$pid" 2>/dev/null && echo yes',
        f"echo {MARK}log",
        f"tail -n 20 {LOG} 2>/dev/null",
        f"echo {MARK}end",
    ]
)
"""Read-only: which job ran last, its exit status (once it ended), whether it still runs, and
the end of its log."""


class Detached(BaseModel):
    """What a poll found on the host."""

    job: str | None = Field(None, description="The run that started the last upgrade.")
    started: bool = Field(False, description="The script wrote its pid: it ran at all.")
    running: bool = False
    status: int | None = Field(None, description="Exit status, once the command ended.")
    log_tail: str = ""
    complete: bool = Field(True, description="False: the poll's output was cut short.")

    @property
    def finished(self) -> bool:
        return not self.running and self.status is not None

    @property
    def lost(self) -> bool:
        """Started, not running, and no exit status: killed, or the host rebooted under it.
        (Between its start and the script's first line there is no pid yet: not lost.)"""
        return self.started and not self.running and self.status is None


def parse_poll(stdout: str) -> Detached:
    """Parse the output of :data:`POLL_COMMAND`."""
    sections = split_sections(stdout)
    status = sections.get("status", "").strip()
    job = sections.get("job", "").strip()
    return Detached(
        job=job or None,
        started=bool(sections.get("pid", "").strip()),
        running=sections.get("alive", "").strip() == "yes",
        status=int(status) if status.isdigit() else None,
        log_tail=sections.get("log", "")[-2000:],
        complete="end" in sections,
    )


def where_to_look(systemd: bool) -> str:
    """Where an operator follows an upgrade that is still running."""
    unit = f"systemctl status {UNIT}" if systemd else f"pid in {PID}"
    return f"{unit}; log {LOG}; exit status in {STATUS} when it ends"
