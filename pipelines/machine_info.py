"""The CPU a benchmark ran on, for the `machine` block every bench-results JSON carries:
figures from a shared 2-core VM and from a workstation are not comparable without it."""

from __future__ import annotations

from pathlib import Path


def cpu_model(default: str = "unknown") -> str:
    """The first `model name` in /proc/cpuinfo, or `default` where there is none (not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default
