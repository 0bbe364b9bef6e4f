"""Which code produced a run: the package version plus the git commit, stamped into summary.json.

A leaf module (it imports nothing else from explore/ but the version string), so the run machinery
(explore.training.jobs) can stamp it without importing the CLI that explore.training.reproduce needs.
"""
from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from explore import __version__

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def code_version() -> str:
    """'0.1.0' plus the git commit when the code is a checkout ('0.1.0+f0fd0db', '+dirty' with local edits)."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return __version__
    if commit.returncode != 0:
        return __version__
    return f"{__version__}+{commit.stdout.strip()}" + (".dirty" if dirty.stdout.strip() else "")
