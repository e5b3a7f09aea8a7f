"""The backup-tools CLI for logical backups: encryption, formats/jobs/tables, restore-table, repo identity."""

from __future__ import annotations

import pytest

from backup_tools.backup.logical import backup_logical
from backup_tools.errors import UsageError
from backup_tools.pg.checks import Fingerprint
from backup_tools.repo.base import FileRepository
from tests.support.logical_env import *  # noqa: F403  (fixtures: server, source, target, repo)
from tests.support.logical_env import new_db, repo_snapshot

pytestmark = pytest.mark.integration


def test_cli_encrypted_logical_backup_needs_its_key_and_restores_nothing_without_it(
    source, server, repo, tmp_path, capsys, monkeypatch
):
    from backup_tools.cli.main import main
    from backup_tools.security.keys import generate_key_file_text

    monkeypatch.delenv("PGDRILL_KEY_FILE", raising=False)
    key, wrong = tmp_path / "backup.key", tmp_path / "wrong.key"
    key.write_text(generate_key_file_text())
    wrong.write_text(generate_key_file_text())
    key.chmod(0o600)
    wrong.chmod(0o600)
    assert main(["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "logical", "--key-file", str(key)]) == 0
    backup_id = capsys.readouterr().out.strip().splitlines()[-1]
    record = repo.read_catalog(backup_id)
    assert record.encryption is not None and record.encryption["key_id"]
    stored = (repo.root / "backups" / backup_id / record.files[0].name).read_bytes()
    assert b"PGDMP" not in stored and b"(\xb5/\xfd" not in stored[:4]  # neither a pg_dump archive nor bare zstd

    for args in (["--key-file", str(wrong)], []):  # wrong key, then no key at all: exit 3, nothing restored
        target = new_db(server, seeded=False)
        code = main(["restore", "--repo", repo.url, "--dsn", target.dsn, *args])
        err = capsys.readouterr().err
        assert code == 3, err
        assert "backup-tools restore: error:" in err and ("key" in err.lower())
        assert target.tables() == set()
    target = new_db(server, seeded=False)
    assert main(["restore", "--repo", repo.url, "--dsn", target.dsn, "--key-file", str(key)]) == 0
    assert target.fingerprint() == Fingerprint.from_dict(record.fingerprints)


def test_cli_logical_format_jobs_and_tables(source, server, repo, capsys):
    from backup_tools.cli.main import main

    argv = ["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "logical", "--format", "directory",
            "--jobs", "2", "--table", "users", "--table", "clients"]  # fmt: skip
    assert main(argv) == 0
    record = repo.read_catalog(capsys.readouterr().out.strip().splitlines()[-1])
    assert (record.options["format"], record.options["jobs"], record.options["tables"]) == (
        "directory", 2, ["users", "clients"])  # fmt: skip
    assert set(record.fingerprints) == {"users", "clients"}
    assert all(f.name.startswith("dump/") for f in record.files)
    target = new_db(server, seeded=False)
    assert main(["restore", "--repo", repo.url, "--dsn", target.dsn, "--table", "users", "--jobs", "2"]) == 0
    assert target.tables() == {"users"}
    assert target.fingerprint() == Fingerprint.from_dict(record.fingerprints).without("clients")

    # formats are checked per kind, with one line saying which fit
    assert main(["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "logical", "--format", "tar"]) == 2
    assert "--kind logical takes custom, directory or plain" in capsys.readouterr().err
    assert main(["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "full", "--format", "custom"]) == 2
    assert "takes --format tar or plain" in capsys.readouterr().err
    assert [r.id for r in repo.list_backups()] == [record.id]


def test_cli_restore_table_into_a_side_table_then_with_a_safety_copy(source, repo, capsys):
    from backup_tools.cli.main import main

    assert main(["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "logical"]) == 0
    record = repo.read_catalog(capsys.readouterr().out.strip().splitlines()[-1])
    source.execute("DELETE FROM documents WHERE id > 200")
    live = source.fingerprint(["documents"])

    argv = ["restore-table", "--repo", repo.url, "--dsn", source.dsn, "--table", "documents"]
    assert main([*argv, "--into", "documents_side"]) == 0
    assert "restored 250 row(s) of documents" in capsys.readouterr().out
    assert source.fingerprint(["documents"]) == live  # the live table is untouched
    assert source.scalar("SELECT count(*) FROM documents_side") == 250

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "safety copy documents_before_restore_" in out
    copy_name = out.split("safety copy ")[1].split()[0]
    assert source.scalar(f'SELECT count(*) FROM "{copy_name}"') == 200
    expected = Fingerprint.from_dict(record.fingerprints).tables["documents"]
    assert source.fingerprint(["documents"]).tables["documents"] == expected

    assert main([*argv[:-1], "no_such_table"]) == 2
    assert "holds no rows of table 'no_such_table'" in capsys.readouterr().err


def test_repo_identity_is_shared_by_logical_and_physical_backups(source, server, repo, pg_bin, make_cluster):
    from backup_tools.backup.physical import physical_backup
    from backup_tools.catalog import IDENTITY_KEY

    def quiet(_: str) -> None:
        pass

    other = make_cluster("other")
    other.init()
    other.start()
    physical_backup(dsn=other.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    identity = repo.get_bytes(IDENTITY_KEY)
    before = repo_snapshot(repo)
    with pytest.raises(UsageError, match=r"holds backups of database system \d+, this server is system \d+"):
        backup_logical(source.dsn, repo, pg=pg_bin)  # another cluster's dump into a repo of physical backups
    assert repo_snapshot(repo) == before

    mine = FileRepository(repo.root.parent / "mine")
    mine.root.mkdir()
    logical = backup_logical(source.dsn, mine, pg=pg_bin)  # the first backup claims the repository
    assert repo.get_bytes(IDENTITY_KEY) == identity
    assert mine.get_bytes(IDENTITY_KEY) != identity
    with pytest.raises(UsageError, match="use a separate repository per cluster"):
        physical_backup(dsn=other.dsn, repo=mine, kind="full", pg=pg_bin, log=quiet)
    physical = physical_backup(dsn=server.dsn, repo=mine, kind="full", pg=pg_bin, log=quiet).record
    assert physical.system_identifier == logical.system_identifier
    assert [r.kind for r in mine.list_backups()] == ["logical", "full"]
