"""Overhead of backup-tools over the raw PostgreSQL tools: backup and restore of the same pgbench data.

    python bench/bench_backup.py [--scale 10] [--reps 5] [--pg-bin DIR] [--keep]
    (python -m bench runs this and every other comparison, and appends the tables to BENCHMARKS.md)

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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup_tools.pg.bin import find_pg_bin  # noqa: E402
from backup_tools.pg.ports import free_port  # noqa: E402
from backup_tools.security.keys import generate_key_file_text  # noqa: E402
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


RAW = "raw"  # raw pg_basebackup (+ pg_verifybackup from 18), raw restores
NONE, ZSTD, AES = "none", "zstd", "zstd+aes"  # backup-tools backup --compress none / zstd / zstd + --key-file
ALL = (RAW, NONE, ZSTD, AES)


@dataclass
class Measured:
    """Seconds per step (one value per round), load averages at round starts, and the data's size."""

    times: dict[str, list[float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)
    size: str = ""
    size_bytes: int = 0

    def add(self, name: str, seconds: float) -> None:
        """Record one round's seconds for a step."""
        self.times.setdefault(name, []).append(seconds)

    def median(self, name: str) -> float:
        """The median seconds of a step."""
        return median(self.times[name])


def measure(pg, *, scale: int, reps: int, variants=ALL, work: Path, log=print) -> Measured:
    """Backup and restore of pgbench data at `scale` with each variant once per round, interleaved."""
    repo = work / "repo"
    repo.mkdir(parents=True)
    (work / "repo-aes").mkdir()
    url = f"file://{repo}"
    key = work / "bench.key"
    key.write_text(generate_key_file_text())
    primary = Cluster("primary", pg=pg, base_dir=work)
    out = Measured()
    pgbin = ["--pg-bin", str(pg.bindir)]
    try:
        primary.init(has_archiving=True, archive_url=url)
        primary.start()
        env = {**os.environ, "PGHOST": str(primary.socket_dir), "PGPORT": str(primary.port), "PGUSER": "postgres"}
        timed([str(pg.tool("pgbench")), "-i", "-q", "-s", str(scale), "postgres"], env=env)
        primary.safe_sql("CHECKPOINT")
        out.size, out.size_bytes = primary.safe_sql(
            "SELECT pg_size_pretty(pg_database_size('postgres')), pg_database_size('postgres')"
        )[0]
        conn = ["-h", str(primary.socket_dir), "-p", str(primary.port), "-U", "postgres"]
        sock = work / "sock"
        sock.mkdir()
        ours = [v for v in (NONE, ZSTD, AES) if v in variants]
        for rep in range(reps):
            out.loads.append(os.getloadavg()[0])
            log(f"  scale {scale}, PostgreSQL {pg.major}, round {rep + 1}/{reps} (load {out.loads[-1]:.1f})")
            raw_dir = work / f"raw-{rep}"
            if RAW in variants:
                raw = timed([str(pg.tool("pg_basebackup")), "-D", str(raw_dir), "-Ft", "-X", "stream", "-c", "fast",
                             *conn])  # fmt: skip
                out.add("raw backup", raw)
                if pg.major >= 18:  # pg_verifybackup reads tar files from 18 on
                    check = timed([str(pg.tool("pg_verifybackup")), "--quiet", "--exit-on-error", "--format=t",
                                   "--no-parse-wal", str(raw_dir)])  # fmt: skip
                    out.add("raw backup + verify", raw + check)
            ids = {}
            for variant in ours:
                codec = "none" if variant == NONE else "zstd"
                # an encrypted repository of its own (a repository's encryption policy is one or the other);
                # its backups are timed only: WAL is archived to the plaintext one, which its restores would need
                extra = ["--key-file", str(key)] if variant == AES else []
                into = f"{url}-aes" if variant == AES else url
                t = timed(tool("backup", "--dsn", primary.dsn, "--repo", into, "--kind", "full", "--compress", codec,
                               *pgbin, *extra))  # fmt: skip
                out.add(f"ours backup {variant}", t)
                if variant != AES:
                    listed = subprocess.run(tool("list", "--repo", url, "--json"), capture_output=True, text=True)
                    ids[variant] = json.loads(listed.stdout)[-1]["id"]
            primary.archive_current_wal()
            if RAW in variants:
                for codec, suffix, flags in (("none", "", []), ("zstd", ".zst", ["-I", "zstd"])):
                    if codec == "zstd":  # the shell-script way: compress the finished files, one zstd -3 thread
                        z = timed(["zstd", "-q", "-3", "-T1", "--rm", str(raw_dir / "base.tar"),
                                   str(raw_dir / "pg_wal.tar")])  # fmt: skip
                        out.add("raw backup + zstd", raw + z)
                    raw_data = work / f"raw-data-{rep}"
                    os.sync()
                    began = time.perf_counter()
                    raw_data.mkdir(mode=0o700)
                    subprocess.run(["tar", *flags, "-xf", str(raw_dir / f"base.tar{suffix}"), "-C", str(raw_data)],
                                   check=True)  # fmt: skip
                    subprocess.run(["tar", *flags, "-xf", str(raw_dir / f"pg_wal.tar{suffix}"), "-C",
                                    str(raw_data / "pg_wal")], check=True)  # fmt: skip
                    wait_writable(pg, raw_data, sock, free_port())
                    out.add(f"raw restore {codec}", time.perf_counter() - began)
                    stop(pg, raw_data)
                    shutil.rmtree(raw_data)
                shutil.rmtree(raw_dir)
            for variant, backup_id in ids.items():
                data = work / f"ours-{rep}-{len(list(work.glob('ours-*')))}"
                t = timed(tool("restore", "--repo", url, "--to", str(data), "--backup", backup_id, "--target-immediate",
                               "--start", "--port", str(free_port()), "--socket-dir", str(sock), *pgbin))  # fmt: skip
                out.add(f"ours restore {variant}", t)
                stop(pg, data)
                shutil.rmtree(data)
    finally:
        primary.teardown()
    return out


def ratios(m: Measured) -> list[tuple[str, float]]:
    """The comparisons of issue 13 that these steps allow: (what, ratio of medians)."""
    have, md = m.times, m.median
    rows = []
    for variant in (NONE, ZSTD, AES):
        if f"ours backup {variant}" in have and "raw backup" in have:
            rows.append((f"backup {variant} / raw pg_basebackup", md(f"ours backup {variant}") / md("raw backup")))
    if "ours backup none" in have and "raw backup + verify" in have:
        rows.append(
            ("backup none / raw pg_basebackup + pg_verifybackup", md("ours backup none") / md("raw backup + verify"))
        )
    if "ours backup zstd" in have and "raw backup + zstd" in have:
        rows.append(("backup zstd / raw pg_basebackup + zstd -T1", md("ours backup zstd") / md("raw backup + zstd")))
    if "ours backup zstd+aes" in have and "raw backup" in have:
        rows.append(
            (
                "speed of backup zstd+aes vs raw pg_basebackup (goal >= 0.8)",
                md("raw backup") / md("ours backup zstd+aes"),
            )
        )
    for codec in (NONE, ZSTD):
        if f"ours restore {codec}" in have and f"raw restore {codec}" in have:
            what = "tar -xf" if codec == NONE else "tar -I zstd -xf"
            rows.append(
                (f"restore {codec} / {what} + pg_ctl start", md(f"ours restore {codec}") / md(f"raw restore {codec}"))
            )
    return rows


def table(m: Measured) -> str:
    """Markdown: median and min-max seconds of every step."""
    lines = ["| step | median (s) | min-max (s) |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {m.median(k):.2f} | {min(v):.2f}-{max(v):.2f} |" for k, v in m.times.items()]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark (variants interleaved, --reps rounds) and print the results table with medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (10 is about 160 MB)")
    parser.add_argument("--reps", type=int, default=5, help="rounds; each variant runs once per round (default 5)")
    parser.add_argument("--pg-bin", help="PostgreSQL bin directory (default: the embedded PostgreSQL)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() == 0:  # PostgreSQL refuses root: rerun as the suite's unprivileged user
        os.execvp("runuser", ["runuser", "-u", "pgdrill", "--", sys.executable, *sys.argv])
    pg = find_pg_bin(args.pg_bin)
    work = Path(tempfile.mkdtemp(prefix="pgdrill-bench-"))
    try:
        m = measure(pg, scale=args.scale, reps=args.reps, work=work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nMachine: {machine()}; PostgreSQL {pg.version}; pgbench scale {args.scale} ({m.size}); {args.reps} rounds, "
          f"load average {min(m.loads):.1f}-{max(m.loads):.1f} at round starts.\n")  # fmt: skip
    print(table(m))
    print("\n| comparison (medians) | ratio |\n| --- | ---: |")
    for what, ratio in ratios(m):
        print(f"| {what} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
