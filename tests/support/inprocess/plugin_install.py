"""Install a handler-plugin distribution from its source tree into a directory with pip
itself (``pip install --no-deps --no-build-isolation --no-index --target DIR``): offline,
built by the venv's own setuptools and wheel (the ``test`` extra), from a copy of the
source so that no build output lands in the repository. Put ``DIR`` on a process's
PYTHONPATH and ``importlib.metadata`` finds its entry points, as for any installed plugin.

    site = install_distribution(REPO / "examples" / "handler-plugin", tmp_path / "site")
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def install_distribution(project: Path, target: Path) -> Path:
    """``target`` holding the distribution at ``project``, installed by pip."""
    source = target.parent / f"{project.name}-source"
    shutil.copytree(
        project,
        source,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest_cache"),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"pip install of {project} failed:\n{done.stdout}{done.stderr}"
    return target
