"""The container provider: a missing engine detected fast with a reason; bad images and servers refused clearly."""

import secrets
import time
from pathlib import Path

import pytest

from backup_tools.pg.bin import find_pg_bin
from fixtures.docker import ContainerError, ContainerProvider, docker_engine_answer, image_major

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")
BASE_IMAGE = "localhost/pgdrill-base:bookworm"  # containers/setup.sh imports it: Debian without PostgreSQL


def test_missing_engine_is_detected_in_under_two_seconds(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    started = time.monotonic()
    reason = docker_engine_answer()
    assert time.monotonic() - started < 2
    assert reason is not None and "no Docker engine answers" in reason


def test_image_major_comes_from_pg_major_or_the_label():
    assert image_major({"Config": {"Env": ["PATH=/bin", "PG_MAJOR=17"]}}) == 17
    assert image_major({"Config": {"Env": [], "Labels": {"org.pgdrill.pg-major": "18"}}}) == 18
    assert image_major({"Config": {"Env": ["PG_MAJOR=latest"]}}) is None
    assert image_major({}) is None


def provider(container_provider, **kwargs) -> ContainerProvider:
    """Another provider on the same engine, with a changed image, tools or time-out."""
    options = {"image": container_provider.image, "restore_image": container_provider.image,
               "pg": container_provider.pg, "passfile": container_provider.passfile, "timeout": 90.0}  # fmt: skip
    return ContainerProvider(**(options | kwargs))


@pytest.mark.container
@pytest.mark.integration
def test_a_container_of_the_image_accepts_connections(container_provider, tmp_path):
    cluster = container_provider.cluster("probe", image=container_provider.image, base_dir=tmp_path, env={})
    try:
        cluster.start()
        with cluster.connect() as conn:
            version = int(conn.execute("SHOW server_version_num").fetchone()[0])
        assert version // 10000 == container_provider.pg.major
    finally:
        cluster.teardown()


@pytest.mark.container
@pytest.mark.integration
def test_an_image_that_does_not_exist_and_cannot_be_pulled_is_refused(container_provider):
    missing = f"localhost/pgdrill-no-such-image:{secrets.token_hex(4)}"
    with pytest.raises(ContainerError, match=r"is not in the engine's storage and could not be pulled") as e:
        provider(container_provider, image=missing, restore_image=missing)
    assert missing in str(e.value)


@pytest.mark.container
@pytest.mark.integration
def test_an_image_without_psql_is_refused(container_provider):
    p = provider(container_provider)
    try:
        p.inspect(BASE_IMAGE)
    except ContainerError:
        pytest.skip(f"{BASE_IMAGE} is not in the engine's storage (containers/setup.sh image imports it)")
    with pytest.raises(ContainerError, match=r"has no usable psql") as e:
        p.run(BASE_IMAGE, name="no-psql", command=["sleep", "300"])
    assert BASE_IMAGE in str(e.value)


@pytest.mark.container
@pytest.mark.integration
def test_a_container_that_never_becomes_ready_times_out_with_its_log(container_provider):
    p = provider(container_provider, timeout=4.0)
    started = time.monotonic()
    command = ["sh", "-c", "echo 'pgdrill-test: this server will never start'; exec sleep 300"]
    with pytest.raises(ContainerError, match=r"did not accept connections within 4 s") as e:
        p.run(container_provider.image, name="never-ready", command=command)
    assert time.monotonic() - started < 60
    assert "pgdrill-test: this server will never start" in str(e.value), "the container's log is not in the error"


@pytest.mark.container
@pytest.mark.integration
def test_an_image_of_another_major_than_the_host_tools_is_refused_before_any_backup(container_provider):
    if not (DEBIAN_15 / "pg_dump").exists() or container_provider.pg.major == 15:
        pytest.skip(f"needs Debian's PostgreSQL 15 tools at {DEBIAN_15} and an image of another major")
    tools_15 = find_pg_bin(DEBIAN_15)
    with pytest.raises(ContainerError, match=r"runs PostgreSQL \d+ but the host tools are PostgreSQL 15") as e:
        provider(container_provider, pg=tools_15)
    assert "no backup was taken" in str(e.value)


@pytest.mark.container
@pytest.mark.integration
def test_a_server_of_another_major_is_refused_once_it_answers(container_provider, tmp_path):
    # An image that declares no major (no PG_MAJOR, no label) is checked against the running server instead.
    if not (DEBIAN_15 / "pg_dump").exists() or container_provider.pg.major == 15:
        pytest.skip(f"needs Debian's PostgreSQL 15 tools at {DEBIAN_15} and an image of another major")
    p = provider(container_provider, pg=find_pg_bin(DEBIAN_15), image=BASE_IMAGE, restore_image=BASE_IMAGE)
    with pytest.raises(ContainerError, match=r"but the host tools are PostgreSQL 15"):
        p.run(container_provider.image, name="other-major")
    names = [c.name for c in p.client.client.containers.list(all=True)]
    assert not [n for n in names if n.startswith("pgdrill-other-major-")], "the refused container was left behind"
