"""Where a number came from: versions, git commit, hardware, start time."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit() -> str | None:
    """Commit of the checkout the package runs from (None for an installed wheel)."""
    here = Path(__file__).resolve().parents[1]  # the checkout (benchmark/ is one level below)
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@functools.cache
def cpuinfo() -> str:
    """The text of ``/proc/cpuinfo`` ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's marketing name (e.g. "AMD EPYC 9454 48-Core Processor"), else the platform's word."""
    for line in cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware(device: str) -> dict[str, Any]:
    """The machine a number came from: CPU wall-clock differs by 2-3x between 2-core machines."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    else:
        info["device_name"] = "cpu"
    return info


def provenance(device: str) -> dict[str, Any]:
    return {
        "package_version": _version("ebyd-bench"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "transformers": _version("transformers"),
        "numpy": _version("numpy"),
        "start_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(device),
    }
