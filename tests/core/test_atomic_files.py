"""healthfed_common.atomic_files: a file is replaced whole or not at all, keeps the mode a plain
write would give it, and an exclusive lock makes read-modify-write cycles take turns."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from healthfed_common.atomic_files import exclusive_lock, write_atomically


def test_a_file_is_replaced_whole_and_no_temporary_file_stays(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    write_atomically(target, "new ✓")
    write_atomically(target, b"newer")
    assert target.read_bytes() == b"newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_failed_write_leaves_the_previous_file_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ca.pem"
    target.write_text("the certificate")

    def disk_full(_descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, "half a certif")
    assert target.read_text() == "the certificate"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem"]


def test_a_process_killed_before_the_rename_leaves_the_previous_file(tmp_path: Path) -> None:
    """A real crash: the child dies (os._exit) where the rename would happen."""
    target = tmp_path / "model-card.json"
    target.write_text('{"complete": true}')
    child = ("import os, sys; from pathlib import Path; from healthfed_common import atomic_files as a; "
             "os.replace = lambda *_: os._exit(9); a.write_atomically(Path(sys.argv[1]), '{\"compl')")
    result = subprocess.run([sys.executable, "-c", child, str(target)], cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 9
    assert target.read_text() == '{"complete": true}'


def test_new_files_get_the_mode_a_plain_write_would_give_unless_one_is_asked(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "server.pem", "public")  # readable by the container's user
        write_atomically(tmp_path / "report.pdf", "private", mode=0o600)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "server.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "report.pdf").stat().st_mode) == 0o600


def test_the_lock_makes_a_second_holder_wait(tmp_path: Path) -> None:
    lock = tmp_path / "results.json.lock"
    events: list[str] = []

    def second() -> None:
        with exclusive_lock(lock):
            events.append("second")

    with exclusive_lock(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        events.append("first done")
    thread.join(timeout=10)
    assert events == ["first done", "second"]
