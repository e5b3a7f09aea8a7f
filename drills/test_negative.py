"""Fault-detection (negative) drills: a broken backup must turn the drill red. Each runs the normal restore path on a damaged
repository or a wrong target and passes only if the suite detects it (a failed restore or a failed data check)."""

import os
import time
from pathlib import Path

import pytest
from psycopg import sql

from backup_tools.restore.pitr import RecoveryTarget
from backup_tools.wal.lsn import parse_lsn, segment_name
from fixtures.faults import corrupt_file, delete_archived_wal

HARM = sql.SQL("DELETE FROM chat_messages")
WAL_SEGMENT = 16 * 1024 * 1024


def harm_and_flush(primary, method, drill):
    """Commit the harm, keep writing a little, and archive the last WAL; return the failure point."""
    failure = drill.inject_sql(primary, HARM)
    time.sleep(0.5)
    drill.ticker.stop()
    method.flush(primary)
    return failure


@pytest.mark.drill("accidental-deletion", fault="archived WAL segment deleted")
@pytest.mark.parametrize("method", ["full"], indirect=True)
@pytest.mark.parametrize("target", [pytest.param(True, id="to-xid"), pytest.param(False, id="to-end-of-wal")])
def test_missing_wal_segment_in_recovery_range_is_detected(protected_primary, method, drill, target):
    # Given a backup, two more archived WAL segments after it, and the harm committed
    truth = drill.snapshot(protected_primary)
    for _ in range(2):
        time.sleep(0.3)
        protected_primary.archive_current_wal()
    failure = harm_and_flush(protected_primary, method, drill)

    # When the first archived segment after the end of the backup is deleted from the repository
    record = method.repo.read_catalog(method.taken[-1])
    after_backup = segment_name(record.timeline, parse_lsn(record.stop_lsn) + WAL_SEGMENT, wal_segment_size=WAL_SEGMENT)
    delete_archived_wal(Path(method.repo_url.removeprefix("file://")) / "wal", after_backup)
    drill.notes["deleted_wal"] = after_backup

    # Then the restore fails loudly (backup-tools refuses, or recovery stops short of the target)
    recovery = RecoveryTarget(xid=failure.xid, inclusive=False) if target else None
    with drill.expect_detection():
        restored = method.restore("restored", target=recovery)
        drill.verify(restored, expected=truth)
        drill.finish(restored)
    assert after_backup in drill.detected or "recovery target" in drill.detected


@pytest.mark.drill("complete-loss", fault="backup object corrupted")
@pytest.mark.parametrize("method", ["full", "logical"], indirect=True)
def test_corrupted_backup_object_is_detected(protected_primary, method, drill):
    # Given a backup in a file repository
    truth = drill.snapshot(protected_primary)
    drill.mark_failure()
    drill.ticker.stop()
    method.flush(protected_primary)

    # When its largest stored object has bytes flipped on disk
    record = method.repo.read_catalog(method.taken[-1])
    biggest = max(record.files, key=lambda f: f.size)
    root = Path(method.repo_url.removeprefix("file://"))
    path = next(p for p in root.rglob("*") if p.is_file() and p.name == Path(biggest.name).name and record.id in str(p))
    corrupt_file(path)
    drill.notes["corrupted_object"] = str(path.relative_to(root))

    # Then the restore refuses the object (checksum mismatch) instead of starting a damaged cluster
    with drill.expect_detection():
        restored = method.restore("restored")
        drill.verify(restored, expected=truth)
        drill.finish(restored)
    assert any(word in drill.detected.lower() for word in ("sha256", "checksum", "corrupt", "integrity"))


@pytest.mark.drill("complete-loss", fault="wrong encryption key")
@pytest.mark.parametrize("method", ["full"], indirect=True)
def test_wrong_encryption_key_is_detected(seeded_cluster, method, drill, tmp_path):
    # Given backups and WAL encrypted with one key
    keys = {}
    for name in ("right", "wrong"):
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_text(method.backup_tools("keygen").stdout)
        os.chmod(keys[name], 0o600)
    method.env["PGDRILL_KEY_FILE"] = str(keys["right"])
    primary = seeded_cluster("primary", env=method.env, **method.primary_config())
    drill.start_ticker(primary)
    method.protect(primary)
    truth = drill.snapshot(primary)
    drill.mark_failure()
    drill.ticker.stop()
    method.flush(primary)

    # When the restore is given another key
    method.env["PGDRILL_KEY_FILE"] = str(keys["wrong"])

    # Then nothing is decrypted and the restore fails naming the key problem
    with drill.expect_detection():
        restored = method.restore("restored")
        drill.verify(restored, expected=truth)
        drill.finish(restored)
    assert "key" in drill.detected.lower()


@pytest.mark.drill("accidental-deletion", fault="restored past the harmful commit")
@pytest.mark.parametrize("method", ["full"], indirect=True)
def test_restore_to_the_wrong_target_fails_the_fingerprint_check(protected_primary, method, drill):
    # Given a backup and the truth before the harm
    truth = drill.snapshot(protected_primary)
    failure = harm_and_flush(protected_primary, method, drill)

    # When the restore goes one transaction too far (up to and including the harmful commit)
    wrong = RecoveryTarget(xid=failure.xid, inclusive=True)

    # Then the data checks catch it: chat_messages is empty where the truth has rows
    with drill.expect_detection():
        restored = method.restore("restored", target=wrong)
        drill.verify(restored, expected=truth)
        drill.finish(restored)
    assert "fingerprints" in drill.detected and "chat_messages" in drill.detected
