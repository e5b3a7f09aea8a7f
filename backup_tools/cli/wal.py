"""The wal-push / wal-fetch verbs (PostgreSQL runs them once per WAL file, so this module imports little), wal-stream."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backup_tools.cli.common import add_key, add_pgbin, add_repo, add_verb, log, one_line, pg_for
from backup_tools.errors import BackupToolsError, WalMissing
from backup_tools.repo import open_repository
from backup_tools.wal.archive import WAL_FETCH_ABORT_EXIT, wal_fetch, wal_push


def cmd_wal_push(args: argparse.Namespace) -> int:
    """Archive one WAL file (archive_command)."""
    wal_push(Path(args.wal_path), repo=open_repository(args.repo), compression=args.compress, key_file=args.key_file)
    return 0


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    """Restore one WAL file (restore_command): missing -> 1, any other failure -> stop recovery."""
    try:
        wal_fetch(args.wal_name, Path(args.dest), repo=open_repository(args.repo), key_file=args.key_file)
    except WalMissing:
        return 1  # normal at the end of the archive; PostgreSQL then ends recovery
    except BackupToolsError as e:
        print(f"backup-tools wal-fetch: error: {one_line(e)}; stopping recovery", file=sys.stderr)
        return WAL_FETCH_ABORT_EXIT
    return 0


def cmd_wal_stream(args: argparse.Namespace) -> int:
    """Stream WAL with pg_receivewal into --dir; push completed files on SIGUSR1, and everything when stopped.

    stdout: `streaming` once the server sees the receiver, `pushed NAME` per archived file, `flushed` after each
    SIGUSR1's push. SIGTERM or SIGINT stops pg_receivewal and archives what it holds, the open segment as .partial.
    """
    import signal
    import time

    from backup_tools.wal.streamer import WalStreamer

    repo = open_repository(args.repo)
    streamer = WalStreamer(dsn=args.dsn, directory=Path(args.dir), pg=pg_for(args), slot=args.slot,
                           synchronous=args.synchronous, log=log)  # fmt: skip
    asked: list[str] = []
    for sig, what in ((signal.SIGUSR1, "flush"), (signal.SIGTERM, "stop"), (signal.SIGINT, "stop")):
        signal.signal(sig, lambda *_, what=what: asked.append(what))
    streamer.start()
    print("streaming", flush=True)
    try:
        while "stop" not in asked:
            if "flush" in asked:
                asked.remove("flush")
                for name in streamer.push_completed(repo):
                    print(f"pushed {name}", flush=True)
                print("flushed", flush=True)
            streamer.check_alive()
            time.sleep(0.05)
    finally:
        before = len(streamer.pushed)
        streamer.stop(repo=repo, push_partial=True)
        for name in streamer.pushed[before:]:
            print(f"pushed {name}", flush=True)
    return 0


def add_wal_parsers(verbs: Any) -> None:
    """Add wal-push, wal-fetch and wal-stream."""
    push = add_verb(verbs, "wal-push", cmd_wal_push, "archive one WAL file; use as archive_command")
    push.add_argument("wal_path", metavar="WAL_PATH", help="the %%p path PostgreSQL passes")
    add_repo(push)
    push.add_argument("--compress", choices=("zstd", "gzip", "none"), default="zstd", help="default zstd")
    add_key(push)
    fetch = add_verb(verbs, "wal-fetch", cmd_wal_fetch, "restore one WAL file; use as restore_command")
    fetch.add_argument("wal_name", metavar="WAL_NAME", help="the %%f file name PostgreSQL asks for")
    fetch.add_argument("dest", metavar="DEST", help="the %%p path to write")
    add_repo(fetch)
    add_key(fetch)
    stream = add_verb(verbs, "wal-stream", cmd_wal_stream,
                      "stream WAL with pg_receivewal into a directory and archive it (a standing WAL receiver)")  # fmt: skip
    stream.add_argument("--dsn", required=True, help="the primary (replication connection; no password: PGPASSFILE)")
    stream.add_argument("--dir", required=True, metavar="DIR", help="where pg_receivewal writes the streamed WAL")
    add_repo(stream)
    stream.add_argument("--slot", default="pgdrill_receivewal", help="replication slot (created if missing)")
    stream.add_argument("--synchronous", action="store_true",
                        help="flush every write and report it at once (for synchronous_standby_names)")  # fmt: skip
    add_pgbin(stream)
