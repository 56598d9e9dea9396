"""`herald topics apply` against the real broker: idempotent, and drift is reported."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time

from pipeline.settings import Settings
from pipeline.topics import DESTINATIONS, apply, load_specs
from tests.integration.conftest import ROOT, Services


def test_apply_twice_changes_nothing(services: Services) -> None:
    specs = load_specs(Settings().topics_file)
    report = apply(services.kafka_bootstrap, specs)  # the session fixture applied it once
    assert report.created == []
    assert report.reconfigured == []
    assert report.drift == []
    assert sorted(report.unchanged) == sorted(s.name for s in specs)


def test_partition_drift_is_reported_not_ignored(services: Services) -> None:
    specs = [
        dataclasses.replace(s, partitions=s.partitions + 1) if s.name == DESTINATIONS else s
        for s in load_specs(Settings().topics_file)
    ]
    report = apply(services.kafka_bootstrap, specs)
    assert len(report.drift) == 1
    assert DESTINATIONS in report.drift[0]


def test_new_topic_is_created_with_its_config(services: Services) -> None:
    spec = dataclasses.replace(
        load_specs(Settings().topics_file)[0],
        name="herald-test-new",
        config={"retention.ms": "3600000"},
    )
    assert apply(services.kafka_bootstrap, [spec]).created == ["herald-test-new"]
    assert apply(services.kafka_bootstrap, [spec]).unchanged == ["herald-test-new"]


def test_cli_exit_code(services: Services) -> None:
    result = subprocess.run(
        [str(ROOT / ".venv/bin/herald"), "topics", "apply"],
        env={**os.environ, "HERALD_KAFKA_BOOTSTRAP": services.kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "unchanged" in result.stdout


def test_apply_raises_partitions_and_never_shrinks(services: Services) -> None:
    name = f"herald-test-raise-{time.time_ns()}"
    spec = dataclasses.replace(load_specs(Settings().topics_file)[0], name=name, partitions=2)
    assert apply(services.kafka_bootstrap, [spec]).created == [name]
    report = apply(services.kafka_bootstrap, [dataclasses.replace(spec, partitions=4)])
    assert (report.raised, report.drift) == ([name], [])
    assert apply(services.kafka_bootstrap, [dataclasses.replace(spec, partitions=4)]).unchanged
    shrink = apply(services.kafka_bootstrap, [spec])
    assert shrink.raised == [] and "cannot take partitions away" in shrink.drift[0]
