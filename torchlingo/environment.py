"""What a run ran on, for the record: printed when training starts and kept in metrics.json under "environment",
so that a result can be compared with (or reproduced from) another one."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from . import __version__, distributed
from .config import Config
from .runtime import resolve_amp_dtype, resolve_device

PRECISION = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
CHECKOUT = Path(__file__).resolve().parents[1]  # the repository root when torchlingo runs from a checkout


def git_commit(root: Path = CHECKOUT) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the checkout torchlingo is imported from; (None, None) for an installed
    package, or where git is missing."""
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()})"
    return str(device)


def describe(config: Config) -> dict:
    """The precision the run computes in (amp resolved for this device: fp32, bf16 or fp16), threads, device, world
    size, versions of Python, torch and torchlingo, and the git commit when run from a checkout."""
    device = resolve_device(config.device)
    commit, dirty = git_commit()
    return {
        "precision": PRECISION[resolve_amp_dtype(config.amp, device)],
        "amp": config.amp,
        "device": device_name(device),
        "threads": config.num_threads or torch.get_num_threads(),  # train_model sets num_threads when given
        "world_size": distributed.world_size(),
        "torch_version": torch.__version__,
        "torchlingo_version": __version__,
        "python_version": platform.python_version(),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def summary(env: dict) -> str:
    """One line for the log."""
    git = f" (git {env['git_commit'][:12]}{', uncommitted changes' if env['git_dirty'] else ''})"
    return (
        f"environment: torchlingo {env['torchlingo_version']}{git if env['git_commit'] else ''}, "
        f"torch {env['torch_version']}, Python {env['python_version']}; device {env['device']}, precision "
        f"{env['precision']} (amp: {env['amp']}), {env['threads']} threads, {env['world_size']} process(es)"
    )
