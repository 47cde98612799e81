"""Install a handler-plugin distribution from its source tree into a directory, as
``pip install --no-deps --target DIR`` lays it out: the packages of its ``src/`` and a
``<name>-<version>.dist-info`` (METADATA, entry_points.txt) made from its
``pyproject.toml``. Offline and without a build backend (the suite's venv has no
``wheel``, and a test reaches loopback only); put ``DIR`` on a process's PYTHONPATH and
``importlib.metadata`` finds its entry points.

    site = install_distribution(REPO / "examples" / "handler-plugin", tmp_path / "site")
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path


def install_distribution(project: Path, target: Path) -> Path:
    """``target`` holding the distribution at ``project`` (a ``src/`` layout)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    target.mkdir(parents=True, exist_ok=True)
    for package in sorted((project / "src").iterdir()):
        if (package / "__init__.py").is_file():
            shutil.copytree(
                package, target / package.name, ignore=shutil.ignore_patterns("__pycache__")
            )
    name = re.sub(r"[-_.]+", "_", meta["name"]).lower()
    info = target / f"{name}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n",
        encoding="utf-8",
    )
    lines = []
    for group, entries in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (info / "INSTALLER").write_text("healer-tests\n", encoding="utf-8")
    return target
