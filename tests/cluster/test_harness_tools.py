"""The small tools every harness uses: bounded waits, free ports, a parsed /metrics scrape."""

from __future__ import annotations

import itertools
import socket

import pytest

from localcluster.net import free_port, free_ports
from localcluster.operator import Metrics
from localcluster.waiting import until


def test_until_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert until(lambda: [n] if (n := next(calls)) == 3 else [], timeout=5, interval=0.001) == [3]


def test_until_gives_up_after_the_timeout_naming_what_and_the_last_value() -> None:
    with pytest.raises(TimeoutError, match=r"the port: not within 0.05 s \(last: 0\)"):
        until(lambda: 0, timeout=0.05, interval=0.01, what="the port")


def test_until_stops_at_once_when_the_predicate_raises() -> None:
    calls = []

    def exited() -> bool:
        calls.append(1)
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        until(exited, timeout=5)
    assert len(calls) == 1


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in [*ports, free_port()]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


EXPOSITION = """\
# HELP scheduledbot_bots ScheduledBots known to the operator, by state
# TYPE scheduledbot_bots gauge
scheduledbot_bots{state="scheduled"} 3.0
scheduledbot_bots{state="ended"} 1.0
# HELP scheduledbot_join_lateness_seconds Join lateness
# TYPE scheduledbot_join_lateness_seconds histogram
scheduledbot_join_lateness_seconds_bucket{le="0.005"} 1.0
scheduledbot_join_lateness_seconds_bucket{le="+Inf"} 2.0
scheduledbot_join_lateness_seconds_count 2.0
scheduledbot_join_lateness_seconds_sum 0.75
# HELP scheduledbot_status_writes_total Status patches
# TYPE scheduledbot_status_writes_total counter
scheduledbot_status_writes_total 7.0
"""


def test_metrics_are_read_by_name_and_labels() -> None:
    metrics = Metrics.parse(EXPOSITION)
    assert metrics.get("scheduledbot_bots", state="ended") == 1
    assert metrics.get("scheduledbot_bots", state="joined") is None
    assert metrics.get("scheduledbot_bots") is None, "a labelled series needs its labels"
    assert metrics.total("scheduledbot_bots") == 4
    assert metrics.get("scheduledbot_status_writes_total") == 7
    assert metrics.get("scheduledbot_join_lateness_seconds_count") == 2
    assert {
        dict(labels)["le"]: v for labels, v in metrics.series("scheduledbot_join_lateness_seconds_bucket").items()
    } == {
        "0.005": 1,
        "+Inf": 2,
    }
    assert metrics.total("no_such_metric") == 0 and metrics.series("no_such_metric") == {}
