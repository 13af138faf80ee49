"""The alerting rules, the Grafana dashboard and README's metrics table speak of
metrics the code registers, and nothing else.

The names come from the real registries (the API's and the worker's counters,
and the families read at scrape time), never from a list kept here. Every PromQL
expression is reduced to its metric names by a small tokenizer; with promtool
installed (Debian's `prometheus` package, which .ci/run installs), the rules and
the dashboard's expressions are also checked by Prometheus' own parser.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ApiMetrics
from shared.backlog import Backlog
from shared.metrics import RedisReading, redis_families, render
from worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "docs" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "flex-handover.json"
README = (ROOT / "README.md").read_text()
PROMTOOL = shutil.which("promtool")
PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus itself writes for every scrape target."""
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "group_left", "group_right"}
    | {"inf", "nan"}
)


def families() -> list:
    """Every family the API and a worker expose, parsed from their rendering."""
    worker = WorkerMetrics(["default"])
    api_registry = CollectorRegistry()
    ApiMetrics(api_registry)
    reading = RedisReading(True, Backlog(1, 1.0))
    text = render(api_registry, redis_families(reading)).decode()
    text += render(worker.registry, worker.slot_families()).decode()
    return list(text_string_to_metric_families(text))


def sample_names() -> set[str]:
    return {sample.name for family in families() for sample in family.samples}


def metric_names(expression: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, label
    names and strings left out)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    stripped = _STRING.sub('""', expression)
    stripped = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", stripped)))
    return {
        name
        for name, call in _IDENTIFIER.findall(stripped)
        if not call and name.lower() not in _KEYWORDS
    }


def unknown_names(expression: str, known: set[str]) -> set[str]:
    names = metric_names(expression)
    return {name for name in names if name not in known and name not in PROMETHEUS_OWN}


def alert_expressions() -> dict[str, str]:
    document = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"]: rule["expr"] for group in document["groups"] for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


def test_the_tokenizer_finds_metric_names_and_nothing_else():
    expression = (
        'histogram_quantile(0.99, sum by (le, caller) (rate(a_bucket{caller="tool",x=~"b|c"}'
        "[$__rate_interval]))) / on(instance) group_left up and ignoring (job) b_total offset 5m"
        ' or absent(c{le="+Inf"}) > bool 1e3'
    )
    assert metric_names(expression) == {"a_bucket", "up", "b_total", "c"}
    assert unknown_names("rate(flex_handover_attempt_total[5m])", sample_names()) == {
        "flex_handover_attempt_total"
    }


def test_every_alert_names_only_registered_metrics():
    known = sample_names()
    expressions = alert_expressions()
    for required in ("OldestWaiting", "Failures", "429", "Redis", "WorkerDown", "Slots"):
        assert any(required in name for name in expressions), required
    for alert, expression in expressions.items():
        assert metric_names(expression), alert
        assert unknown_names(expression, known) == set(), alert


def test_the_dashboard_is_grafana_json_over_a_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = dashboard["templating"]["list"]
    datasource = [v for v in variables if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in datasource] == [("datasource", "prometheus")]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["uid"]
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    uses = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        assert panel["datasource"] == uses, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == uses for target in panel["targets"])
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}


def test_every_dashboard_expression_names_only_registered_metrics():
    known = sample_names()
    shown: set[str] = set()
    for title, expression in dashboard_expressions().items():
        assert metric_names(expression), title
        assert unknown_names(expression, known) == set(), title
        shown |= metric_names(expression)
    # Every family is on the dashboard somewhere.
    for family in families():
        assert any(name.startswith(family.name) for name in shown), family.name


def test_the_readme_metrics_table_is_every_family():
    section = README.split("\n### Metrics\n", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `(flex_handover_\w+)` \|", section, re.M))
    exposed = {
        family.name + "_total" if family.type == "counter" else family.name for family in families()
    }
    assert documented == exposed


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_checks_the_rules_and_the_dashboard_expressions(tmp_path):
    checked = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = [
        {"record": f"dashboard:expression_{n}", "expr": _with_values(expression)}
        for n, expression in enumerate(dashboard_expressions().values())
    ]
    recorded = tmp_path / "dashboard.yml"
    recorded.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(recorded)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _with_values(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression
