"""Overhead of backup-tools over the raw PostgreSQL tools: backup and restore of the same pgbench data, one run.

    python bench/bench_backup.py [--scale 10] [--keep]

Backup:  raw `pg_basebackup -Ft -X stream -c fast` into a directory
         vs `backup-tools backup --kind full` (--compress none, then zstd) into a file:// repository.
Restore: raw = `tar -xf` base.tar + pg_wal.tar, `pg_ctl start -w`, wait until it accepts writes
         vs `backup-tools restore --start` (checksummed fetch, recovery.signal, WAL from the archive, promotion).
Prints a Markdown table of seconds and ratios (goal: <= 1.10x) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup_tools.pgbin import find_pg_bin  # noqa: E402
from fixtures.cluster import Cluster, free_port  # noqa: E402


def timed(args: list[str], **kwargs) -> float:
    """Seconds one command takes (it must succeed); dirty pages of earlier steps are flushed first."""
    os.sync()
    began = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - began


def tool(*args: str) -> list[str]:
    """A backup-tools command line run with this interpreter."""
    return [sys.executable, "-m", "backup_tools", *args]


def wait_writable(pg, data: Path, sock: Path, port: int) -> None:
    """Start a data directory with pg_ctl and wait until it is out of recovery."""
    opts = f"-p {port} -k {sock} -c listen_addresses="
    subprocess.run([str(pg.tool("pg_ctl")), "-D", str(data), "-l", str(data.parent / f"{data.name}.log"),
                    "-o", opts, "-w", "start"], check=True, capture_output=True)  # fmt: skip
    import psycopg

    while True:
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres") as conn:
            if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                return
        time.sleep(0.05)


def stop(pg, data: Path) -> None:
    """Stop a server."""
    subprocess.run([str(pg.tool("pg_ctl")), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)


def machine() -> str:
    """One line describing this machine."""
    cpuinfo, meminfo = Path("/proc/cpuinfo").read_text(), Path("/proc/meminfo").read_text()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    mem = next((ln.split()[1] for ln in meminfo.splitlines() if ln.startswith("MemTotal")), "0")
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {int(mem) // 1024} MiB RAM"


def main() -> None:
    """Run the benchmark once and print the results table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (10 is about 160 MB)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() == 0:  # PostgreSQL refuses root: rerun as the suite's unprivileged user
        os.execvp("runuser", ["runuser", "-u", "pgdrill", "--", sys.executable, *sys.argv])
    pg = find_pg_bin()
    work = Path(tempfile.mkdtemp(prefix="pgdrill-bench-"))
    repo = work / "repo"
    repo.mkdir()
    primary = Cluster("primary", pg=pg, base_dir=work)
    rows: list[tuple[str, float, float]] = []
    try:
        primary.init(has_archiving=True, archive_url=f"file://{repo}")
        primary.start()
        env = {**os.environ, "PGHOST": str(primary.socket_dir), "PGPORT": str(primary.port), "PGUSER": "postgres"}
        timed([str(pg.tool("pgbench")), "-i", "-q", "-s", str(args.scale), "postgres"], env=env)
        primary.safe_sql("CHECKPOINT")
        (size,) = primary.safe_sql("SELECT pg_size_pretty(pg_database_size('postgres'))")[0]

        raw_dir = work / "raw"
        raw = timed([str(pg.tool("pg_basebackup")), "-D", str(raw_dir), "-Ft", "-X", "stream", "-c", "fast",
                     "-h", str(primary.socket_dir), "-p", str(primary.port), "-U", "postgres"])  # fmt: skip
        ours = timed(
            tool("backup", "--dsn", primary.dsn, "--repo", f"file://{repo}", "--kind", "full", "--compress", "none")
        )
        rows.append(("backup: pg_basebackup -Ft vs backup-tools backup --kind full --compress none", raw, ours))
        zstd = timed(tool("backup", "--dsn", primary.dsn, "--repo", f"file://{repo}", "--kind", "full"))
        rows.append(("backup: pg_basebackup -Ft vs backup-tools backup --kind full (zstd, default)", raw, zstd))
        primary.archive_current_wal()

        raw_data, sock = work / "raw-data", work / "sock"
        sock.mkdir()
        os.sync()
        began = time.perf_counter()
        raw_data.mkdir(mode=0o700)
        subprocess.run(["tar", "-xf", str(raw_dir / "base.tar"), "-C", str(raw_data)], check=True)
        subprocess.run(["tar", "-xf", str(raw_dir / "pg_wal.tar"), "-C", str(raw_data / "pg_wal")], check=True)
        wait_writable(pg, raw_data, sock, free_port())
        raw_restore = time.perf_counter() - began
        stop(pg, raw_data)
        for backup_kind, label in (("none", "--compress none backup"), ("zstd", "zstd backup")):
            listed = subprocess.run(tool("list", "--repo", f"file://{repo}", "--json"), capture_output=True, text=True)
            backup_id = [b["id"] for b in json.loads(listed.stdout) if b["options"]["compression"] == backup_kind][0]
            data = work / f"ours-{backup_kind}"
            ours_restore = timed(tool("restore", "--repo", f"file://{repo}", "--to", str(data), "--backup", backup_id,
                                      "--target-immediate", "--start", "--port", str(free_port()),
                                      "--socket-dir", str(sock)))  # fmt: skip
            stop(pg, data)
            rows.append(
                (
                    f"restore: tar -xf + pg_ctl start vs backup-tools restore --start ({label})",
                    raw_restore,
                    ours_restore,
                )
            )
    finally:
        primary.teardown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nMachine: {machine()}; PostgreSQL {pg.version}; pgbench scale {args.scale} ({size}); one run each.\n")
    print("| comparison | raw (s) | backup-tools (s) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, raw_s, ours_s in rows:
        print(f"| {name} | {raw_s:.2f} | {ours_s:.2f} | {ours_s / raw_s:.2f}x |")


if __name__ == "__main__":
    main()
