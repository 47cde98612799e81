"""Rule params may quote alert data: ``"{{ labels.container }}"``,
``"odoo-{{ labels.instance }}"``, ``"{{ annotations.summary }}"``.

A substituted value is *data*: it is placed into the params structure as a
string and nothing here evaluates it. The handler's params model then validates
it (e.g. a container name must look like one) and the engine checks the
resulting targets against the allowlist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from healer.bounded import map_strings
from healer.errors import InvalidParams

_TEMPLATE = re.compile(r"\{\{\s*(labels|annotations)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_PLACEHOLDER = "x0"


def render_params(params: Any, labels: Mapping[str, str], annotations: Mapping[str, str]) -> Any:
    """Replace every template in ``params`` (recursively); a missing key raises InvalidParams."""
    sources = {"labels": labels, "annotations": annotations}

    def sub(match: re.Match[str]) -> str:
        source, key = match.group(1), match.group(2)
        if key not in sources[source]:
            raise InvalidParams(f"params need {source}.{key}, which the alert does not carry")
        return sources[source][key]

    return map_strings(params, lambda text: _TEMPLATE.sub(sub, text))


def placeholder_params(params: Any) -> Any:
    """The params with every template replaced by a harmless placeholder (config checks)."""
    return map_strings(params, lambda text: _TEMPLATE.sub(_PLACEHOLDER, text))
