"""Steps the fault tests share: toy hospitals that approve plans on their own, and waiting
for a process to say something (failing with its last lines if it exits or stays silent)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from pipelines.local_federation import LocalFederation, Member
from tests.federation.conftest import DATASET, OPEN_APPROVAL_POLICY, TOY_POLICY, write_toy_export


def prepare_toy_silos(federation: LocalFederation, exports: Path, rows: dict[str, int]) -> None:
    for index, (silo_id, count) in enumerate(sorted(rows.items())):
        federation.set_approval_policy(silo_id, OPEN_APPROVAL_POLICY)
        export = write_toy_export(exports / f"{silo_id}.csv", count, seed=index)
        federation.register_dataset(silo_id, DATASET, export, TOY_POLICY)


def wait_for_line(member: Member, text: str, timeout_s: float, *, after: int = 0) -> int:
    """Index of the first line (from `after` on) of `member`'s output containing `text`."""
    deadline = time.time() + timeout_s
    while True:
        for index in range(after, len(member.lines)):
            if text in member.lines[index]:
                return index
        if member.process.poll() is not None:
            raise AssertionError(f"{member.name} exited before printing {text!r}:\n" + "\n".join(member.lines[-40:]))
        if time.time() > deadline:
            raise AssertionError(f"{member.name} never printed {text!r}:\n" + "\n".join(member.lines[-40:]))
        time.sleep(0.05)


def living(pids: list[int]) -> list[int]:
    """The pids still running (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive
