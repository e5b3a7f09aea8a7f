"""Every comparison of issue 13 in one command; prints the tables and appends them to BENCHMARKS.md.

    python -m bench [--rounds 5] [--scale 40] [--growth 10,40,100] [--skip pgbackrest,s3,growth,dd,pg15]
                    [--s3-scale 1.0] [--no-append]

Run from the repository root, as root or as any user (PostgreSQL refuses root: after installing what is
missing with apt, it re-executes itself as the suite's unprivileged `pgdrill` user). Every comparison runs its
variants once per round, interleaved, and reports medians; ratios within one run are what to trust on a shared
machine (the load average is recorded with every round).

1. Raw tools vs backup-tools (bench/bench_backup.py) on the embedded PostgreSQL (18) and Debian's PostgreSQL 15:
   raw pg_basebackup (+ pg_verifybackup on 18, + zstd -T1), backup-tools backup none / zstd / zstd + AES-256-GCM,
   raw restores (tar -xf / tar -I zstd -xf + pg_ctl start) vs backup-tools restore --start.
2. The disk limit: dd with O_DIRECT, writing and reading as many bytes as the database holds.
3. pgBackRest (Debian's package) on PostgreSQL 15, process-max 2: full backup + restore with compress-type
   none / zst / lz4 vs backup-tools none / zstd on the same cluster.
4. S3 upload through the repository seam vs a plain boto3 upload, one moto server (bench/bench_s3_upload.py).
5. Growth: backup and restore (zstd) at each --growth scale, with the MB/s of a least-squares line fitted
   through (bytes, seconds): fixed cost + bytes / rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG15 = Path("/usr/lib/postgresql/15/bin")
MB = 1_000_000


def log(text: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(text, file=sys.stderr, flush=True)


def ensure_packages(skip: set[str]) -> dict[str, str]:
    """Install pgBackRest and PostgreSQL 15 with apt when missing (root and apt only); return why a part is skipped."""
    why: dict[str, str] = {}
    need = []
    if "pgbackrest" not in skip and shutil.which("pgbackrest") is None:
        need.append("pgbackrest")
    if not ({"pgbackrest", "pg15"} <= skip) and not (PG15 / "postgres").exists():
        need.append("postgresql-15")
    if need and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {' '.join(need)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *need], env=env, capture_output=True)
    if shutil.which("pgbackrest") is None:
        why["pgbackrest"] = "pgbackrest is not installed and could not be installed here (needs root and apt-get)"
    if not (PG15 / "postgres").exists():
        why["pgbackrest"] = why["pg15"] = f"PostgreSQL 15 is not at {PG15} (Debian package postgresql-15)"
    return why


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares seconds = fixed + bytes / rate: (fixed seconds, rate in MB/s)."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - slope * mx, (1 / slope / MB) if slope > 0 else float("inf")


def dd_limit(work: Path, size: int, rounds: int) -> list[str]:
    """Write then read `size` bytes with O_DIRECT, `rounds` times: the disk's MB/s (median)."""
    import statistics

    count = max(64, size // (1 << 20))
    target = work / "dd.bin"
    writes, reads = [], []
    for _ in range(rounds):
        for args, into in (
            (["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}", "oflag=direct"], writes),
            (["dd", f"if={target}", "of=/dev/null", "bs=1M", "iflag=direct"], reads),
        ):
            began = time.perf_counter()
            subprocess.run(args, check=True, capture_output=True)
            into.append(count * (1 << 20) / (time.perf_counter() - began) / MB)
    target.unlink(missing_ok=True)
    return [
        "| disk (dd, O_DIRECT, 1 MiB blocks) | MB/s (median) | min-max |",
        "| --- | ---: | ---: |",
        f"| write {count} MiB | {statistics.median(writes):.0f} | {min(writes):.0f}-{max(writes):.0f} |",
        f"| read {count} MiB | {statistics.median(reads):.0f} | {min(reads):.0f}-{max(reads):.0f} |",
    ]


def pgbackrest_vs_ours(scale: int, rounds: int, work: Path) -> list[str]:
    """Full backup + restore (to writable) with pgBackRest (none/zst/lz4) and backup-tools (none/zstd), PG15."""
    import json
    import statistics

    from backup_tools.pg.bin import find_pg_bin
    from backup_tools.pg.ports import free_port
    from bench.bench_backup import stop, timed, tool, wait_writable
    from fixtures.cluster import Cluster, backup_tools_command

    pg = find_pg_bin(PG15)
    repo, brrepo, conf = work / "repo", work / "pgbackrest", work / "pgbackrest.conf"
    for d in (repo, brrepo, work / "brlog", work / "brlock", work / "brspool", work / "sock"):
        d.mkdir()
    url = f"file://{repo}"
    cluster = Cluster("primary", pg=pg, base_dir=work)
    br = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
    times: dict[str, list[float]] = {}
    loads = []
    try:
        # one cluster archives to both repositories; pgBackRest first, since its backup waits until its own
        # repository holds the last segment (backup-tools takes the backup's WAL from pg_wal.tar instead)
        ours = backup_tools_command("wal-push", "%p", "--repo", url)
        theirs = f"pgbackrest --config={conf} --stanza=bench archive-push %p"
        cluster.init(has_archiving=True, archive_url=url, settings={"archive_command": f"{theirs} && {ours}"})
        conf.write_text(
            f"[global]\nrepo1-path={brrepo}\nlog-path={work / 'brlog'}\nlock-path={work / 'brlock'}\nstart-fast=y\n"
            f"spool-path={work / 'brspool'}\n"
            f"process-max=2\nlog-level-console=warn\nlog-level-file=off\n\n[bench]\npg1-path={cluster.data_dir}\n"
            f"pg1-port={cluster.port}\npg1-socket-path={cluster.socket_dir}\npg1-user=postgres\n"
        )
        cluster.start()
        env = {**os.environ, "PGHOST": str(cluster.socket_dir), "PGPORT": str(cluster.port), "PGUSER": "postgres"}
        timed([str(pg.tool("pgbench")), "-i", "-q", "-s", str(scale), "postgres"], env=env)
        timed([*br, "stanza-create"])
        size = cluster.safe_sql("SELECT pg_size_pretty(pg_database_size('postgres'))")[0][0]
        pgbin = ["--pg-bin", str(pg.bindir)]
        sock = work / "sock"
        for r in range(rounds):
            loads.append(os.getloadavg()[0])
            log(f"  pgBackRest vs backup-tools, PostgreSQL 15, round {r + 1}/{rounds} (load {loads[-1]:.1f})")
            for name, compress in (("pgbackrest none", "none"), ("pgbackrest zst", "zst"), ("pgbackrest lz4", "lz4")):
                times.setdefault(f"{name} backup", []).append(
                    timed(
                        [
                            *br,
                            "--type=full",
                            f"--compress-type={compress}",
                            "--compress-level=3" if compress == "zst" else "--compress-level=1",
                            "backup",
                        ]
                    )  # fmt: skip
                )
                cluster.archive_current_wal()
                data = work / f"br-data-{r}"
                began = time.perf_counter()
                data.mkdir(mode=0o700)
                timed([*br, f"--pg1-path={data}", "--type=immediate", "--target-action=promote", "--archive-mode=off",
                       "restore"])  # fmt: skip
                wait_writable(pg, data, sock, free_port())
                times.setdefault(f"{name} restore", []).append(time.perf_counter() - began)
                stop(pg, data)
                shutil.rmtree(data)
                timed([*br, "expire", "--repo1-retention-full=1"])
            for codec in ("none", "zstd"):
                t = timed(tool("backup", "--dsn", cluster.dsn, "--repo", url, "--kind", "full", "--compress", codec,
                               *pgbin))  # fmt: skip
                times.setdefault(f"backup-tools {codec} backup", []).append(t)
                listed = subprocess.run(tool("list", "--repo", url, "--json"), capture_output=True, text=True)
                backup_id = json.loads(listed.stdout)[-1]["id"]
                cluster.archive_current_wal()
                data = work / f"ours-data-{r}-{codec}"
                t = timed(tool("restore", "--repo", url, "--to", str(data), "--backup", backup_id, "--target-immediate",
                               "--start", "--port", str(free_port()), "--socket-dir", str(sock), *pgbin))  # fmt: skip
                times.setdefault(f"backup-tools {codec} restore", []).append(t)
                stop(pg, data)
                shutil.rmtree(data)
    finally:
        cluster.teardown()
    m = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"pgBackRest {subprocess.run(['pgbackrest', 'version'], capture_output=True, text=True).stdout.strip()}"
             f" (process-max 2) vs backup-tools, PostgreSQL {pg.version}, pgbench scale {scale} ({size}); {rounds} "
             f"rounds, load average {min(loads):.1f}-{max(loads):.1f} at round starts.", "",
             "| step | median (s) | min-max (s) |", "| --- | ---: | ---: |"]  # fmt: skip
    lines += [f"| {k} | {m[k]:.2f} | {min(v):.2f}-{max(v):.2f} |" for k, v in times.items()]
    lines += ["", "| backup + restore (medians) | ratio (goal <= 0.8) |", "| --- | ---: |"]
    for ours, theirs in (("none", "none"), ("zstd", "zst"), ("zstd", "lz4")):
        total = m[f"backup-tools {ours} backup"] + m[f"backup-tools {ours} restore"]
        other = m[f"pgbackrest {theirs} backup"] + m[f"pgbackrest {theirs} restore"]
        lines.append(f"| backup-tools {ours} / pgBackRest {theirs} | {total / other:.2f}x |")
    return lines


def s3_vs_boto3(scale: float, rounds: int) -> list[str]:
    """bench/bench_s3_upload.py's comparison, its printed tables captured."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_s3_upload.py"), "--scale", str(scale),
                           "--rounds", str(rounds)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        return [f"S3 comparison failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"]
    return done.stdout.strip().splitlines()


def main() -> int:
    """Run the chosen comparisons, print the Markdown, append it to BENCHMARKS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per comparison (default 5)")
    parser.add_argument("--scale", type=int, default=40, help="pgbench scale of the comparisons (40 is about 600 MB)")
    parser.add_argument("--growth", default="10,40,100", help="pgbench scales of the growth fit ('' to skip)")
    parser.add_argument("--s3-scale", type=float, default=1.0, help="seeded data scale of the S3 upload")
    parser.add_argument("--skip", default="", help="comma-separated: raw, pg15, dd, pgbackrest, s3, growth")
    parser.add_argument("--no-append", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    command = " ".join(["python -m bench", *sys.argv[1:]])
    why = ensure_packages(skip)
    if os.geteuid() == 0:  # PostgreSQL refuses root: the measuring runs as the suite's unprivileged user
        for tree in ("backup_tools", "bench", "fixtures"):  # byte-code it cannot write would be compiled every start
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / tree)], check=False)
        child = subprocess.Popen(["runuser", "-u", "pgdrill", "--", sys.executable, "-m", "bench", *sys.argv[1:],
                                  "--no-append"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PGDRILL_BENCH_COMMAND": command})  # fmt: skip
        lines = []
        assert child.stdout is not None
        for line in child.stdout:  # sections as they are measured
            print(line, end="", flush=True)
            lines.append(line)
        if child.wait() == 0 and not args.no_append:
            append("".join(lines))
        return child.returncode
    command = os.environ.get("PGDRILL_BENCH_COMMAND", command)

    from backup_tools.pg.bin import find_pg_bin
    from bench.bench_backup import ALL, RAW, ZSTD, machine, measure, ratios, table

    began = time.monotonic()
    started = datetime.now(UTC)
    pg = find_pg_bin()
    out: list[str] = []

    def emit(*lines: str) -> None:  # each section is printed as soon as it is measured (a long run shows progress)
        out.extend(lines)
        print("\n".join(lines), flush=True)

    emit(f"## `{command}` ({started:%Y-%m-%d %H:%M} UTC)", "",
           f"Machine: {machine()}; load average at the start {os.getloadavg()[0]:.1f} "
         f"(1/5/15 min: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}).", "")  # fmt: skip
    base = Path(tempfile.mkdtemp(prefix="pgdrill-bench-all-"))
    measured: dict[int, object] = {}
    try:
        majors = [] if "raw" in skip else [(pg, "embedded")] + ([] if "pg15" in skip or "pg15" in why else [
            (find_pg_bin(PG15), "Debian")])  # fmt: skip
        for n, (bins, source) in enumerate(majors):
            log(f"raw tools vs backup-tools, PostgreSQL {bins.version} ({source}), scale {args.scale}")
            m = measure(bins, scale=args.scale, reps=args.rounds, variants=ALL, work=base / f"raw{n}", log=log)
            if n == 0:
                measured[args.scale] = m
            emit(f"### Raw tools vs backup-tools, PostgreSQL {bins.version} ({source}), pgbench scale {args.scale} "
                 f"({m.size}); {args.rounds} rounds, load {min(m.loads):.1f}-{max(m.loads):.1f}", "", table(m), "",
                 "| comparison (medians) | ratio |", "| --- | ---: |",
                 *[f"| {what} | {ratio:.2f}x |" for what, ratio in ratios(m)], "")  # fmt: skip
        if "dd" not in skip:
            log("disk limit (dd O_DIRECT)")
            size = measured[args.scale].size_bytes if args.scale in measured else 600 * MB  # type: ignore[attr-defined]
            (base / "dd").mkdir()
            emit("### The disk limit", "", *dd_limit(base / "dd", size, args.rounds), "")
        if "pgbackrest" in skip or "pgbackrest" in why:
            emit("### pgBackRest", "", f"Skipped: {why.get('pgbackrest', '--skip pgbackrest')}.", "")
        else:
            log("pgBackRest vs backup-tools (PostgreSQL 15)")
            (base / "br").mkdir()
            emit("### pgBackRest vs backup-tools", "", *pgbackrest_vs_ours(args.scale, args.rounds, base / "br"), "")
        if "s3" not in skip:
            log("S3 upload: seam vs boto3 (moto server)")
            emit(
                "### S3 upload: repository seam vs plain boto3 (moto server)",
                "",
                *s3_vs_boto3(args.s3_scale, args.rounds),
                "",
            )
        scales = [int(s) for s in args.growth.split(",") if s.strip()] if "growth" not in skip else []
        if scales:
            points: dict[str, list[tuple[float, float]]] = {}
            rows = ["| scale | database | raw pg_basebackup (s) | backup zstd (s) | restore zstd (s) |",
                    "| ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
            for scale in scales:
                m = measured.get(scale)
                if m is None:
                    log(f"growth: scale {scale}")
                    m = measure(
                        pg, scale=scale, reps=args.rounds, variants=(RAW, ZSTD), work=base / f"g{scale}", log=log
                    )
                    measured[scale] = m
                size = m.size_bytes  # type: ignore[attr-defined]
                steps = ("raw backup", "ours backup zstd", "ours restore zstd")
                for step in steps:
                    points.setdefault(step, []).append((size, m.median(step)))  # type: ignore[attr-defined]
                rows.append(f"| {scale} | {m.size} | " + " | ".join(f"{m.median(s):.2f}" for s in steps) + " |")  # type: ignore[attr-defined]
            rows += ["", "| step | fitted fixed cost (s) | fitted rate (MB/s) |", "| --- | ---: | ---: |"]
            for step, pts in points.items():
                fixed, rate = fit(pts)
                rows.append(f"| {step} | {fixed:.2f} | {rate:.0f} |")
            emit(f"### Growth (PostgreSQL {pg.version}, {args.rounds} rounds each, medians)", "", *rows, "")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    minutes = (time.monotonic() - began) / 60
    emit(f"Run took {minutes:.0f} min; load average at the end {os.getloadavg()[0]:.1f}.", "")
    if not args.no_append:
        append("\n".join(out))
    return 0


def append(text: str) -> None:
    """Add a run's section at the end of BENCHMARKS.md."""
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write("\n" + text.rstrip("\n") + "\n")
    log(f"appended to {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    sys.exit(main())
