"""The optional Docker provider: absence detected fast with a reason; presence gives a real server."""

import time

import psycopg
import pytest

from fixtures.docker import docker_engine_answer


def test_missing_engine_is_detected_in_under_two_seconds(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    started = time.monotonic()
    reason = docker_engine_answer()
    assert time.monotonic() - started < 2
    assert reason is not None and "no Docker engine answers" in reason


@pytest.mark.integration
def test_container_server_accepts_a_restore_target(docker_postgres):
    with psycopg.connect(docker_postgres.dsn, autocommit=True) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    assert version.startswith(docker_postgres.image.split(":")[1])
