"""The loop fixtures' side of a ``healer serve`` process: its config file and its heal
history."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.servers.processes import HealerProc


def write_config(workdir: Path, config: dict[str, Any]) -> Path:
    """``workdir/healer.yml`` holding ``config``, for ``healer serve --config``."""
    path = workdir / "healer.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass(kw_only=True)
class HealerApi:
    healer: HealerProc
    admin_token: str

    def _get(self, path: str, **params: Any) -> Any:
        with httpx.Client(timeout=5.0) as client:
            response = client.get(
                f"{self.healer.url}{path}",
                params=params,
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
        response.raise_for_status()
        return response.json()

    def heals(self, **filters: Any) -> list[dict[str, Any]]:
        heals: list[dict[str, Any]] = self._get("/api/v1/heals", **filters)["heals"]
        return heals

    def paused(self) -> bool:
        """Whether healing is paused (GET /api/v1/pause)."""
        return bool(self._get("/api/v1/pause")["paused"])

    def heal(self, heal_id: str) -> dict[str, Any]:
        heal: dict[str, Any] = self._get(f"/api/v1/heals/{heal_id}")
        return heal
