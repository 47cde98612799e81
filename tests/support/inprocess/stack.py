"""The example stack's files, read as data: alert rules and their promtool tests,
compose.yml and its mounts. Shared by tests/unit/test_alerts.py and test_compose.py.

    rules = alerting_rules()                  # [{"alert": ..., "labels": ..., ...}, ...]
    for alert in expected_firing_alerts():     # labels of every alert a promtool test
        ...                                    # expects to fire, alertname included
    compose = load_compose()
    mounts(compose, "prometheus")              # [Mount(source, target, ...)]
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "alerts"
COMPOSE = REPO / "compose.yml"
# The runbooks the alerts link to, copied into the repository (docs/runbooks).
RUNBOOKS = REPO / "docs" / "runbooks"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rule_files() -> list[Path]:
    return sorted(ALERTS.glob("*.rules.yml"))


def alerting_rules(files: list[Path] | None = None) -> list[dict[str, Any]]:
    """Every alerting rule (recording rules left out), with ``_file`` set to its file."""
    out = []
    for path in files if files is not None else rule_files():
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out.append({**rule, "_file": path.name})
    return out


def rule_tests() -> list[Path]:
    return sorted((ALERTS / "tests").glob("*.yml"))


def alert_expectations() -> list[tuple[str, str, list[dict[str, Any]]]]:
    """``(test file, alertname, exp_alerts)`` for every alert_rule_test entry."""
    out = []
    for path in rule_tests():
        for test in load_yaml(path).get("tests", []):
            for case in test.get("alert_rule_test", []):
                out.append((path.name, case["alertname"], case.get("exp_alerts") or []))
    return out


def expected_firing_alerts() -> list[dict[str, str]]:
    """The full label set of every alert some promtool test expects to fire
    (deduplicated): real label sets, as Alertmanager would receive them."""
    seen: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for _, alertname, exp_alerts in alert_expectations():
        for exp in exp_alerts:
            labels = {
                "alertname": alertname,
                **{k: str(v) for k, v in (exp.get("exp_labels") or {}).items()},
            }
            seen[tuple(sorted(labels.items()))] = labels
    return list(seen.values())


def load_compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith(("/", ".", "~"))

    @property
    def repo_path(self) -> Path | None:
        """The repository file or directory a relative bind mount refers to."""
        if not self.source.startswith("."):
            return None
        return (REPO / self.source).resolve()


def mounts(compose: dict[str, Any], service: str) -> list[Mount]:
    """A service's volumes, short (``src:dst[:ro]``) or long syntax."""
    out = []
    for vol in compose["services"][service].get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            source, target = parts[0], parts[1]
            opts = parts[2].split(",") if len(parts) > 2 else []
            out.append(Mount(source, target, "ro" in opts))
        else:
            out.append(
                Mount(str(vol.get("source", "")), vol["target"], bool(vol.get("read_only", False)))
            )
    return out


def secret_names(compose: dict[str, Any], service: str) -> list[str]:
    out = []
    for item in compose["services"][service].get("secrets", []):
        out.append(item if isinstance(item, str) else item["source"])
    return out


def secret_targets(compose: dict[str, Any], service: str) -> dict[str, str]:
    """In-container path -> secret name (``/run/secrets/<name>`` unless a target is given)."""
    out = {}
    for item in compose["services"][service].get("secrets", []):
        if isinstance(item, str):
            out[f"/run/secrets/{item}"] = item
        else:
            target = item.get("target", item["source"])
            path = target if target.startswith("/") else f"/run/secrets/{target}"
            out[path] = item["source"]
    return out


def materialize(compose: dict[str, Any], service: str, root: Path) -> Path:
    """Copy a service's repository bind mounts to ``root`` + their in-container paths,
    so that a config can be checked with the file layout the container sees."""
    for mount in mounts(compose, service):
        src = mount.repo_path
        if src is None:
            continue
        dest = root / mount.target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy(src, dest)
    return root
