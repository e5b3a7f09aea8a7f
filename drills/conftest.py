"""The world drills start from: a seeded template data directory (seeded once per run) and primaries copied from it."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backup_tools.pg.bin import PgBin
from fixtures.cluster import Access, Cluster
from fixtures.docker import ContainerCluster
from fixtures.drill import Drill
from fixtures.methods import METHODS, Method, method_unavailable
from fixtures.origin import build_seeded_world
from fixtures.seed import SeedResult

log = logging.getLogger("pgdrill")


deselected_key = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave `slow` drills (large scales) out of the default run: select them with -m slow."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config.stash[deselected_key] = [item.nodeid for item in slow]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """Say which drills were deselected, why, and how to include them."""
    slow = config.stash.get(deselected_key, [])
    others = len(terminalreporter.stats.get("deselected", [])) - len(slow)
    if others > 0:
        terminalreporter.write_line(f"pgdrill: {others} test(s) deselected by your -k/-m selection")
    if slow:
        names = ", ".join(nodeid.split("::")[-1] for nodeid in slow[:3]) + (" ..." if len(slow) > 3 else "")
        terminalreporter.write_line(f"pgdrill: {len(slow)} drill(s) deselected because they are marked slow (large "
                                    f"scales, long): {names}; include them with -m slow (make drills ARGS='-m slow')")  # fmt: skip


@dataclass(frozen=True)
class Template:
    """A stopped data directory holding the production-like world with the seeded data, and how to reach copies."""

    data_dir: Path
    seeded: SeedResult
    size_bytes: int | None = None  # pg_database_size of the seeded database: the report's "measured on a ... seed"
    access: Access = Access()  # superuser, passfile (0600) and default database `app` of every copy


@pytest.fixture(scope="session")
def seeded_template(
    pg_bin: PgBin, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Template]:
    """Initialise (scram only) and seed one cluster at --scale/--seed, then stop it; drills copy its data directory."""
    scale, seed = pytestconfig.getoption("scale"), pytestconfig.getoption("seed")
    cluster = Cluster("template", pg=pg_bin, base_dir=tmp_path_factory.mktemp("template"))
    try:
        cluster.init(allows_streaming=True, password_auth=True)
        cluster.start()
        result, size = build_seeded_world(cluster, scale=scale, seed=seed)
        cluster.stop()
        yield Template(cluster.data_dir, result, size, cluster.access)
    finally:
        cluster.teardown()


@pytest.fixture
def seeded_cluster(
    make_cluster: Callable[..., Cluster], drill: Drill, request: pytest.FixtureRequest
) -> Callable[..., Cluster]:
    """Factory: a started cluster holding the seeded world, configured like Cluster.init (archiving, streaming)."""

    def factory(name: str = "primary", *, env: dict[str, str] | None = None, **config) -> Cluster:
        cluster = make_cluster(name, env=env or {})
        if isinstance(cluster, ContainerCluster):  # the image's own initdb (scram), then the same world over SQL
            cluster.init(**config)
            cluster.start()
            scale, seed = request.config.getoption("scale"), request.config.getoption("seed")
            seeded, size = build_seeded_world(cluster, scale=scale, seed=seed)
        else:
            template: Template = request.getfixturevalue("seeded_template")  # seeded once per run, when first needed
            cluster.init_from_template(template.data_dir, **config)
            cluster.copy_access(template.access)
            cluster.start()
            seeded, size = template.seeded, template.size_bytes
        drill.notes["seed"] = seeded.rows
        drill.notes["seed_size_bytes"] = size
        drill.notes["seed_load"] = {"seconds": round(seeded.seconds, 2), "rows_per_second": round(seeded.rows_per_second)}
        return cluster

    return factory


@pytest.fixture
def make_method(make_cluster: Callable[..., Cluster], pg_bin: PgBin, drill: Drill, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[Callable[..., Method]]:  # fmt: skip
    """Factory of backup methods by name; `where` is "file" (a local repository) or an S3 region of the s3 fixture."""
    made: list[Method] = []

    def factory(name: str, *, where: str = "file", endpoint: str | None = None, prefix: str | None = None,
                repo_url: str | None = None, env: dict[str, str] | None = None, label: str | None = None) -> Method:  # fmt: skip
        reason = method_unavailable(name, pg_bin)
        if reason:
            pytest.skip(reason)
        env = dict(env or {})
        if where != "file":
            s3 = request.getfixturevalue("s3")
            prefix = prefix or f"drills/{uuid.uuid4().hex[:10]}"
            repo_url, env = (
                s3.repo_url(where, prefix),
                env | s3.env(where) | ({"AWS_ENDPOINT_URL": endpoint} if endpoint else {}),
            )
        work = tmp_path / f"method-{len(made) + 1}"
        made.append(METHODS[name](pg=pg_bin, make_cluster=make_cluster, repo_dir=work, recorder=drill.recorder,
                                  label=label, repo_url=repo_url, env=env))  # fmt: skip
        return made[-1]

    yield factory
    for m in made:
        m.close()


@pytest.fixture
def method(request: pytest.FixtureRequest, make_method: Callable[..., Method]) -> Method:
    """The method named by the test's indirect `method` parameter ("full", or "full@s3" for the primary S3 region)."""
    name, _, where = request.param.partition("@")
    if where == "s3":
        where = request.getfixturevalue("s3").primary_region
    return make_method(name, where=where or "file", label=request.param)


@pytest.fixture
def protected_primary(seeded_cluster: Callable[..., Cluster], method: Method, drill: Drill) -> Cluster:
    """A seeded primary configured for the method, the ticker committing, and the method's backups taken."""
    primary = seeded_cluster("primary", env=method.env, **method.primary_config())
    method.attach(primary)
    drill.start_ticker(primary)
    method.protect(primary)
    time.sleep(1.0)  # the application keeps writing after the backup
    return primary
