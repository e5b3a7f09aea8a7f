"""Overhead of backup-tools over the raw PostgreSQL tools: backup and restore of the same pgbench data.

    python bench/bench_backup.py [--scale 10] [--reps 5] [--keep]

Backup:  raw `pg_basebackup -Ft -X stream -c fast` into a directory (also + `pg_verifybackup`, the fair
         baseline: backup-tools always verifies) vs `backup-tools backup --kind full` (--compress none, zstd)
         into a file:// repository.
         zstd: the raw files compressed afterwards with `zstd -3 -T1` (this PostgreSQL build has no zstd).
Restore: raw = `tar -xf` base.tar + pg_wal.tar (or `tar -I zstd`), `pg_ctl start -w`, wait until it accepts writes
         vs `backup-tools restore --target-immediate --start` (checksummed fetch, recovery.signal, WAL from
         the archive, promotion). Variants are interleaved in every round; medians are reported.
Prints Markdown tables of seconds and ratios (goal: <= 1.10x) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup_tools.pg.bin import find_pg_bin  # noqa: E402
from backup_tools.pg.ports import free_port  # noqa: E402
from fixtures.cluster import Cluster  # noqa: E402


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


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def main() -> None:
    """Run the benchmark (variants interleaved, --reps rounds) and print the results table with medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (10 is about 160 MB)")
    parser.add_argument("--reps", type=int, default=5, help="rounds; each variant runs once per round (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() == 0:  # PostgreSQL refuses root: rerun as the suite's unprivileged user
        os.execvp("runuser", ["runuser", "-u", "pgdrill", "--", sys.executable, *sys.argv])
    pg = find_pg_bin()
    work = Path(tempfile.mkdtemp(prefix="pgdrill-bench-"))
    repo = work / "repo"
    repo.mkdir()
    url = f"file://{repo}"
    primary = Cluster("primary", pg=pg, base_dir=work)
    times: dict[str, list[float]] = {}
    loads: list[float] = []
    try:
        primary.init(has_archiving=True, archive_url=url)
        primary.start()
        env = {**os.environ, "PGHOST": str(primary.socket_dir), "PGPORT": str(primary.port), "PGUSER": "postgres"}
        timed([str(pg.tool("pgbench")), "-i", "-q", "-s", str(args.scale), "postgres"], env=env)
        primary.safe_sql("CHECKPOINT")
        (size,) = primary.safe_sql("SELECT pg_size_pretty(pg_database_size('postgres'))")[0]
        conn = ["-h", str(primary.socket_dir), "-p", str(primary.port), "-U", "postgres"]
        sock = work / "sock"
        sock.mkdir()
        for rep in range(args.reps):
            loads.append(os.getloadavg()[0])
            raw_dir = work / f"raw-{rep}"
            raw = timed([str(pg.tool("pg_basebackup")), "-D", str(raw_dir), "-Ft", "-X", "stream", "-c", "fast", *conn])
            check = timed([str(pg.tool("pg_verifybackup")), "--quiet", "--exit-on-error", "--format=t", "--no-parse-wal",
                           str(raw_dir)])  # fmt: skip
            times.setdefault("raw backup", []).append(raw)
            times.setdefault("raw backup + verify", []).append(raw + check)
            ids = {}
            for codec in ("none", "zstd"):
                t = timed(tool("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "full", "--compress", codec))
                times.setdefault(f"ours backup {codec}", []).append(t)
                listed = subprocess.run(tool("list", "--repo", url, "--json"), capture_output=True, text=True)
                ids[codec] = json.loads(listed.stdout)[-1]["id"]
            primary.archive_current_wal()

            for codec, suffix, flags in (("none", "", []), ("zstd", ".zst", ["-I", "zstd"])):
                if codec == "zstd":  # the shell-script way: compress the finished files, one zstd -3 thread
                    z = timed(
                        ["zstd", "-q", "-3", "-T1", "--rm", str(raw_dir / "base.tar"), str(raw_dir / "pg_wal.tar")]
                    )
                    times.setdefault("raw backup + verify + zstd", []).append(raw + check + z)
                raw_data = work / f"raw-data-{rep}"
                os.sync()
                began = time.perf_counter()
                raw_data.mkdir(mode=0o700)
                subprocess.run(["tar", *flags, "-xf", str(raw_dir / f"base.tar{suffix}"), "-C", str(raw_data)],
                               check=True)  # fmt: skip
                subprocess.run(["tar", *flags, "-xf", str(raw_dir / f"pg_wal.tar{suffix}"), "-C",
                                str(raw_data / "pg_wal")], check=True)  # fmt: skip
                wait_writable(pg, raw_data, sock, free_port())
                times.setdefault(f"raw restore {codec}", []).append(time.perf_counter() - began)
                stop(pg, raw_data)
                shutil.rmtree(raw_data)
            shutil.rmtree(raw_dir)
            for codec, backup_id in ids.items():
                data = work / f"ours-{codec}-{rep}"
                t = timed(tool("restore", "--repo", url, "--to", str(data), "--backup", backup_id, "--target-immediate",
                               "--start", "--port", str(free_port()), "--socket-dir", str(sock)))  # fmt: skip
                times.setdefault(f"ours restore {codec}", []).append(t)
                stop(pg, data)
                shutil.rmtree(data)
    finally:
        primary.teardown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    m = {k: median(v) for k, v in times.items()}
    print(f"\nMachine: {machine()}; PostgreSQL {pg.version}; pgbench scale {args.scale} ({size}); {args.reps} rounds, "
          f"load average {min(loads):.1f}-{max(loads):.1f} at round starts.\n")  # fmt: skip
    print("| step | median (s) | min-max (s) |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {m[name]:.2f} | {min(values):.2f}-{max(values):.2f} |")
    print("\n| comparison (medians) | ratio |")
    print("| --- | ---: |")
    base = {"none": "raw backup + verify", "zstd": "raw backup + verify + zstd"}
    for ours in ("none", "zstd"):
        print(f"| backup --compress {ours} vs raw pg_basebackup | {m[f'ours backup {ours}'] / m['raw backup']:.2f}x |")
        print(f"| backup --compress {ours} vs {base[ours]} (fair) | {m[f'ours backup {ours}'] / m[base[ours]]:.2f}x |")
    for ours in ("none", "zstd"):
        print(f"| restore --start ({ours} backup) vs tar -xf + pg_ctl start ({ours}) | "
              f"{m[f'ours restore {ours}'] / m[f'raw restore {ours}']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
