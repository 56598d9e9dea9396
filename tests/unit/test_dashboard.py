"""The Grafana dashboard and the Prometheus alert rules against the metrics Herald exports.

Every PromQL expression of ops/grafana/dashboards/herald.json and ops/prometheus/alerts.yml
may only name series that pipeline/metrics.py declares (a counter `x` is exported as
`x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`), and every declared metric is
shown or alerted on somewhere. The metric declarations follow the house rules.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from pipeline import metrics
from tests.unit.test_compose import (
    PROMETHEUS_DEFAULT_CONFIG,
    _host_path,
    _prometheus_config_path,
    _service,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "herald.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
DATASOURCES = ROOT / "ops" / "grafana" / "provisioning" / "datasources"
REQUIRED_ALERTS = {
    "HeraldDeliveryFailureRateHigh",
    "HeraldDeadLetterQueueGrowing",
    "HeraldConsumerLagGrowing",
    "HeraldDestinationAutoDisabled",
}
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}
# Words of PromQL that look like names but are not series.
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "inf", "nan"}
)
_STRING = re.compile(r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`""")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expression: str) -> set[str]:
    """The series names a PromQL expression selects (functions, labels, keywords left out)."""
    text = _STRING.sub('""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries ($__rate_interval too)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # the exponent of 1e3, say
            continue
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def _declared() -> list[MetricWrapperBase]:
    found = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    # Label children (EVENTS_ACCEPTED, …) are not declarations of their own.
    return [m for m in found if not getattr(m, "_labelvalues", ())]


@cache
def exported_series() -> dict[str, str]:
    """Every series name pipeline/metrics.py can export → its metric's family name."""
    series = {}
    for metric in _declared():
        for family in metric.describe():
            for suffix in SERIES_SUFFIXES[family.type]:
                series[family.name + suffix] = family.name
    return series


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard target and alert rule."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in _panels()
        for target in panel["targets"]
    ]
    found += [(f"alert {rule['alert']}", rule["expr"]) for rule in _alert_rules()]
    return found


def test_the_parser_finds_series_and_nothing_else() -> None:
    expression = (
        "histogram_quantile(0.99, sum by (le, type) "
        '(rate(a_bucket{outcome="x y"}[$__rate_interval])))'
        " / ignoring(tier) max without (tier) (b offset 5m) > 1e3 and on(type) c_total"
    )
    assert metric_names(expression) == {"a_bucket", "b", "c_total"}


@pytest.mark.parametrize(("where", "expression"), _expressions())
def test_every_expression_uses_exported_metrics(where: str, expression: str) -> None:
    names = metric_names(expression)
    assert names, f"{where}: no metric found in {expression!r}"
    unknown = names - exported_series().keys()
    assert not unknown, f"{where}: pipeline/metrics.py exports none of {sorted(unknown)}"


def test_every_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    used = {
        exported_series()[name]
        for _, expression in _expressions()
        for name in metric_names(expression)
        if name in exported_series()
    }
    declared = {family.name for m in _declared() for family in m.describe()}
    assert declared - used == set(), "declared but never shown"


def test_metrics_follow_the_house_rules() -> None:
    for metric in _declared():
        [family] = metric.describe()
        assert family.name.startswith("herald_"), family.name
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_bytes")), f"{family.name}: base units"
        labels = set(metric._labelnames)
        # Prometheus sets job and instance itself; an id would make cardinality unbounded.
        assert not labels & {"job", "instance"}, family.name
        assert not [label for label in labels if label == "id" or label.endswith("_id")]


def test_the_dashboard_is_provisioned_grafana_json() -> None:
    dashboard = _dashboard()
    assert (dashboard["uid"], dashboard["title"]) == ("herald", "Herald")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource_uids = {
        source["uid"]
        for path in DATASOURCES.glob("*.y*ml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    }
    for panel in _panels():
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] in datasource_uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in datasource_uids, panel["title"]
    titles = " ".join(panel["title"].lower() for panel in _panels())
    for topic in ("published", "success rate", "latency", "backlog", "dead letter", "lag"):
        assert topic in titles, f"no {topic} panel"


def test_prometheus_loads_the_alert_rules() -> None:
    config_path = _prometheus_config_path()
    config = yaml.safe_load(config_path.read_text())
    names = {rule["alert"] for rule in _alert_rules()}
    assert names >= REQUIRED_ALERTS
    # rule_files are relative to the config file, inside the container.
    prometheus = _service("prometheus")
    loaded = set()
    for pattern in config.get("rule_files", []):
        in_container = str(Path(PROMETHEUS_DEFAULT_CONFIG).parent / pattern)
        host_path = _host_path(prometheus, in_container)
        assert host_path is not None and host_path.is_file(), f"{in_container} is not mounted"
        loaded.add(host_path.resolve())
    assert ALERTS.resolve() in loaded
    for rule in _alert_rules():
        assert rule.get("labels", {}).get("severity"), rule["alert"]
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
