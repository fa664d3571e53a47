"""deploy/grafana-dashboard.json and deploy/alerts.yml are built on the metrics the bot really
exports: every expression names only exported series and only their labels (the names are taken
from a real registry's rendering, parsed with prometheus-client's parser), and the panels and
alerts an operator needs are there."""

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from bot.config import Config
from bot.services.metrics import RUNWARE_OUTCOMES, Metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
ALERTS = ROOT / "deploy" / "alerts.yml"
METRIC_NAME = re.compile(r"\bklingbot_[a-z_]+\b")
SELECTOR = re.compile(r"(klingbot_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
STATES = {"succeeded", "failed", "timed_out", "cancelled"}


def exported() -> dict[str, set[str]]:
    """Every series name a bot's registry renders, with its label names."""
    metrics = Metrics(Config().models)
    metrics.discord_request("message_create", "200")  # its series exist once a request was made
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def dashboard_expressions(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in dashboard_expressions(value)]
    if isinstance(node, list):
        return [e for item in node for e in dashboard_expressions(item)]
    return []


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def alerts() -> dict[str, str]:
    rules = YAML(typ="safe").load(ALERTS.read_text())
    return {rule["alert"]: " ".join(rule["expr"].split()) for group in rules["groups"] for rule in group["rules"]}


def check_expression(expr: str, series: dict[str, set[str]]) -> None:
    names = METRIC_NAME.findall(expr)
    if not names:
        assert re.fullmatch(r'up\{job="klingbot"\} == 0', expr), f"no klingbot metric in {expr!r}"
        return
    unknown = sorted(set(names) - set(series))
    assert not unknown, f"{expr!r} names {unknown}, which the bot does not export"
    for name, body in SELECTOR.findall(expr):
        for label, op, value in MATCHER.findall(body):
            assert label in series[name], f"{expr!r}: {name} has no label {label!r}"
            if label == "outcome" and op in ("=", "!="):
                assert value in RUNWARE_OUTCOMES, f"{expr!r}: outcome {value!r} is never exported"
            if label == "state":
                assert set(value.split("|")) <= STATES, f"{expr!r}: state {value!r} is never exported"
    labels = set().union(*(series[n] for n in names))
    for group in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            assert label in labels, f"{expr!r}: no metric in it has the label {label!r}"


def test_every_dashboard_expression_names_only_exported_metrics_and_labels(dashboard) -> None:
    series = exported()
    exprs = dashboard_expressions(dashboard)
    assert len(exprs) >= 10
    for expr in exprs:
        check_expression(expr, series)


def test_every_alert_names_only_exported_metrics_and_labels(alerts) -> None:
    series = exported()
    assert len(alerts) >= 6
    for expr in alerts.values():
        check_expression(expr, series)


@pytest.mark.parametrize("bad", [
    "sum(rate(klingbot_jobs_total[5m]))",                                   # no such metric
    'sum(rate(klingbot_runware_requests_total{result="ok"}[5m]))',          # no such label
    'sum(rate(klingbot_runware_requests_total{outcome="timeout"}[5m]))',    # no such value
    "sum by (guild) (klingbot_queue_depth)",                                # no such label either
])
def test_the_check_refuses_what_the_bot_does_not_export(bad) -> None:
    with pytest.raises(AssertionError):
        check_expression(bad, exported())


def test_the_panels_an_operator_needs_are_there(dashboard) -> None:
    panels = {p["title"]: dashboard_expressions(p) for p in dashboard["panels"]}

    def shown(metric: str, needle: str = "") -> bool:
        return any(metric in e and needle in e for exprs in panels.values() for e in exprs)

    assert shown("klingbot_jobs_finished_total", "by (state)")
    assert shown("klingbot_spend_usd_total", "by (model)")
    assert shown("klingbot_queue_depth")
    assert shown("klingbot_jobs_in_flight")
    assert shown("klingbot_result_post_seconds_bucket", "histogram_quantile")
    assert shown("klingbot_runware_requests_total", 'outcome!="ok"')
    assert shown("klingbot_discord_requests_total", 'status="429"')
    assert shown("klingbot_paused")


def test_the_dashboard_is_importable_into_grafana(dashboard) -> None:
    assert dashboard["title"] == "klingbot" and dashboard["uid"]
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"])
