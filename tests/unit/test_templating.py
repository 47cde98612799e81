"""Rule params quoting alert data (healer.templating): substitution as data, never code."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from handlers.docker import RestartParams
from healer.errors import InvalidParams
from healer.templating import placeholder_params, render_params

LABELS = {"alertname": "WebDown", "container": "web-1", "instance": "odoo:8069"}
ANNOTATIONS = {"summary": "web is down", "host": "db-2"}

HOSTILE = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "' OR 1=1 --",
    "../../etc/passwd",
    "web-1\n",
    "web-1; reboot",
    "-v /:/host",
    "{{ labels.container }}",
    "x" * 200,
    "\x00",
]


def test_a_whole_value_template_is_replaced() -> None:
    """``{{ labels.x }}`` becomes the label value."""
    assert render_params({"container": "{{ labels.container }}"}, LABELS, {}) == {
        "container": "web-1"
    }


def test_annotations_are_available() -> None:
    """``{{ annotations.x }}`` reads the alert's annotations."""
    assert render_params({"host": "{{annotations.host}}"}, {}, ANNOTATIONS) == {"host": "db-2"}


def test_templates_are_substituted_recursively() -> None:
    """Templates inside nested lists and dicts are all replaced; other values untouched."""
    params = {
        "containers": ["{{ labels.container }}", "static"],
        "nested": {"deep": [{"who": "{{ annotations.host }}"}]},
        "stop_timeout": 10,
        "flag": True,
        "none": None,
    }
    assert render_params(params, LABELS, ANNOTATIONS) == {
        "containers": ["web-1", "static"],
        "nested": {"deep": [{"who": "db-2"}]},
        "stop_timeout": 10,
        "flag": True,
        "none": None,
    }


def test_embedded_templates_are_substituted_in_place() -> None:
    """A template inside a longer string, or several in one string, are each replaced."""
    assert render_params("odoo-{{ labels.container }}-{{labels.alertname}}", LABELS, {}) == (
        "odoo-web-1-WebDown"
    )


def test_dict_keys_are_never_templated() -> None:
    """Only values are substituted: keys stay what the rule author wrote."""
    assert render_params({"{{ labels.container }}": 1}, LABELS, {}) == {"{{ labels.container }}": 1}


def test_the_input_is_not_mutated() -> None:
    """Rendering builds a new structure; the rule's params stay templates for the next alert."""
    params = {"containers": ["{{ labels.container }}"]}
    render_params(params, LABELS, {})
    assert params == {"containers": ["{{ labels.container }}"]}


def test_a_missing_label_raises_invalid_params() -> None:
    """A template naming a label the alert does not carry is InvalidParams naming it,
    never an empty string."""
    with pytest.raises(InvalidParams, match=r"labels\.pod"):
        render_params({"containers": ["{{ labels.pod }}"]}, LABELS, ANNOTATIONS)


def test_a_missing_annotation_raises_invalid_params() -> None:
    """Same for annotations."""
    with pytest.raises(InvalidParams, match=r"annotations\.runbook"):
        render_params("{{ annotations.runbook }}", LABELS, ANNOTATIONS)


def test_text_that_is_not_a_template_is_left_alone() -> None:
    """Unknown sources and malformed braces are plain text, not errors."""
    text = "{{ env.HOME }} {{labels}} {labels.container} {{ labels.container"
    assert render_params(text, LABELS, {}) == text


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_come_through_verbatim(value: str) -> None:
    """A label value is data: shell, SQL and path syntax arrive unchanged, and a value that
    looks like a template is not expanded a second time."""
    labels = {"container": value, "secret": "LEAKED"}
    assert render_params({"containers": ["{{ labels.container }}"]}, labels, {}) == {
        "containers": [value]
    }


@pytest.mark.parametrize("value", HOSTILE)
def test_docker_restart_refuses_hostile_container_names(value: str) -> None:
    """docker.restart's params model rejects every hostile value as a container name, so
    it never reaches the Docker API."""
    raw = render_params({"containers": ["{{ labels.container }}"]}, {"container": value}, {})
    with pytest.raises(ValidationError):
        RestartParams.model_validate(raw)


@pytest.mark.parametrize("value", ["; rm -rf /", "../x", "a b"])
def test_docker_restart_refuses_hostile_compose_names(value: str) -> None:
    """The same holds for compose service and project names."""
    with pytest.raises(ValidationError):
        RestartParams.model_validate({"service": value})
    with pytest.raises(ValidationError):
        RestartParams.model_validate({"service": "web", "project": value})


def test_docker_restart_accepts_real_container_names() -> None:
    """Ordinary names (compose style, dots, underscores) pass."""
    params = RestartParams.model_validate(
        render_params({"containers": ["{{ labels.container }}", "shop_db.1"]}, LABELS, {})
    )
    assert list(params.containers) == ["web-1", "shop_db.1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "params",
    [
        {"containers": ["{{ labels.container }}"]},
        {"containers": ["odoo-{{ labels.instance }}-{{annotations.host}}"]},
        {"service": "{{ labels.service }}", "project": "{{ labels.project }}"},
    ],
)
def test_placeholders_let_config_checks_pass_templates(params: Any) -> None:
    """At config time templates become a harmless placeholder that names validate."""
    RestartParams.model_validate(placeholder_params(params))


def test_placeholders_leave_literals_alone() -> None:
    """Only templates are replaced; a literal (even a bad one) is still validated as is."""
    assert placeholder_params({"containers": ["; rm -rf /"], "n": 3}) == {
        "containers": ["; rm -rf /"],
        "n": 3,
    }
