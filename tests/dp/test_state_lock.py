"""One silo process per state folder (issue 12 item 5): `silo-node run` takes an exclusive
flock on STATE/silo.lock for its lifetime; a second process on the same folder exits 1 with
STATE_DIR_LOCKED naming the folder, before it opens the database or talks to anyone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from silo_node.state_lock import LOCK_FILE, StateDirLocked, StateLock

ROOT = Path(__file__).resolve().parents[2]

_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from silo_node.state_lock import StateLock
    lock = StateLock(Path(sys.argv[1])).acquire()
    print("HELD", flush=True)
    time.sleep(600)
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture
def holder(tmp_path: Path) -> subprocess.Popen[str]:
    """Another process holding the state folder's lock (stands for a running silo)."""
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "state")], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True, env=_env())
    assert process.stdout is not None and process.stdout.readline().strip() == "HELD"
    yield process
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)  # the process this fixture started, by its id
        process.wait(timeout=30)


def test_second_silo_node_run_on_a_locked_folder_exits_with_state_dir_locked(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "silo.yaml"
    config.write_text(textwrap.dedent(f"""
        silo_id: st-marys
        federation: test
        aggregator_address: 127.0.0.1:9
        tls: {{ca_certificate: ca.pem, certificate: silo.pem, private_key: silo.key}}
        state_dir: {state}
    """))
    for name in ("ca.pem", "silo.pem", "silo.key"):  # present and readable: run checks the kit first
        (tmp_path / name).write_text("placeholder\n")
    second = subprocess.run([sys.executable, "-m", "silo_node.cli.main", "run", "--config", str(config)],
                            cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=120)
    assert second.returncode == 1, second.stderr
    assert "STATE_DIR_LOCKED" in second.stderr and str(state) in second.stderr
    assert str(holder.pid) in second.stderr  # names who holds it
    assert not (state / "silo.sqlite3").exists()  # refused before touching the state


def test_lock_is_exclusive_and_freed_when_the_holder_dies(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    state = tmp_path / "state"
    with pytest.raises(StateDirLocked) as locked:
        StateLock(state).acquire()
    assert locked.value.code == "STATE_DIR_LOCKED" and str(state) in str(locked.value)
    os.kill(holder.pid, signal.SIGKILL)  # a crash: the kernel drops the lock, nothing stale remains
    holder.wait(timeout=30)
    with StateLock(state) as mine:
        assert (state / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(StateDirLocked):  # even a second lock in the same process
            StateLock(state).acquire()
        del mine
    StateLock(state).acquire().release()  # released on exit
