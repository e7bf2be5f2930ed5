"""A real federation on disk (made by `aggregator provision`) and a runner for the container
entrypoints outside Docker: the same script, with the mount points moved to temp folders by
the environment variables the entrypoints document."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from aggregator.provisioning import Federation
from pipelines.local_federation import provision_local_federation

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
SILOS = ("st-marys", "riverside", "hillcrest")


@dataclass
class Mounts:
    """What a hospital (or the coordinator) would mount into the container."""

    federation: Federation
    root: Path

    def kit(self, silo: str = "st-marys") -> Path:
        return self.federation.kits[silo]

    def state(self, name: str = "st-marys") -> Path:
        return self.root / "volumes" / name / "state"

    def data(self, name: str = "st-marys") -> Path:
        path = self.root / "volumes" / name / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture(scope="module")
def federation_dir(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """One provisioned federation per module (key generation is the slow part)."""
    root = tmp_path_factory.mktemp("federation")
    return provision_local_federation(root / "fed", "deploy-test", list(SILOS), "127.0.0.1:50999",
                                listen_address="127.0.0.1:50999")


@pytest.fixture()
def mounts(federation_dir: Federation, tmp_path: Path) -> Mounts:
    return Mounts(federation_dir, tmp_path)


def run_entrypoint(role: str, env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Runs deploy/<role>/entrypoint.sh with the test's Python and console scripts."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHFED_")}
    full_env |= {
        "HEALTHFED_PYTHON": sys.executable,
        "HEALTHFED_SILO_NODE": str(VENV_BIN / "silo-node"),
        "HEALTHFED_AGGREGATOR": str(VENV_BIN / "aggregator"),
    } | env
    return subprocess.run(
        [str(DEPLOY / role / "entrypoint.sh"), *args], env=full_env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def silo_env(mounts: Mounts, silo: str = "st-marys", **extra: str) -> dict[str, str]:
    return {
        "HEALTHFED_KIT_DIR": str(mounts.kit(silo)),
        "HEALTHFED_STATE_DIR": str(mounts.state(silo)),
        "HEALTHFED_DATA_DIR": str(mounts.data(silo)),
    } | extra
