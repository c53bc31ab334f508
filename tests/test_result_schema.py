"""The ``--json`` result schema carries a version; files of every older version still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parallel_kit.errors import ConfigError
from parallel_kit.records import (
    SCHEMA_VERSION,
    RequestResult,
    RunResult,
    read_json,
    summarize,
    write_json,
)


def _run() -> RunResult:
    rows = [RequestResult(request_id=f"r{i}", mode="pool", prompt="p", model="m", ok=True,
                          submitted_s=0.0, started_s=float(i), first_token_s=float(i) + 0.5,
                          finished_s=float(i) + 1.0) for i in range(3)]
    return RunResult(summarize(rows, mode="pool", backend="sim", time_scale=0.02, workers=3,
                               slots=1, model="m"), rows)


def test_written_files_name_their_schema_version(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", [_run()])
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION == 2


def test_a_file_without_a_version_reads_as_version_one(tmp_path: Path) -> None:
    doc = json.loads(write_json(tmp_path / "r.json", [_run()]).read_text())
    del doc["schema_version"]
    doc["runs"][0]["summary"]["field_from_elsewhere"] = 1  # unknown fields are ignored
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    (run,) = read_json(old)
    assert run.summary.mode == "pool" and run.summary.workers == 3 and len(run.requests) == 3


def test_a_file_from_a_newer_kit_says_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "new.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "runs": []}))
    with pytest.raises(ConfigError, match="upgrade parallel_kit"):
        read_json(path)


def test_a_file_that_is_not_a_results_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"cells": []}))
    with pytest.raises(ConfigError, match="not a parallel_kit results file"):
        read_json(path)
