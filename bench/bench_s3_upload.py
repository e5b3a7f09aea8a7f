"""Upload throughput through the repository seam (zstd + AES-256-GCM) vs a plain boto3 upload of the same bytes.

    python bench/bench_s3_upload.py [--scale 1.0] [--rounds 3] [--input FILE]

Data: a pg_basebackup tar (-Ft) of a cluster seeded with the suite's Faker data (users, cases, documents,
chat messages) at --scale, or any --input file; then, as the seam's worst case, --noise-mb of random
bytes (documents that are already compressed, like PDF/JPEG, gain nothing from zstd). Server: one moto server process on 127.0.0.1, used
by every variant in the same run. Variants, interleaved per round:
  boto3 upload_fileobj       the same TransferConfig as S3Repository (32 MiB parts, 4 threads), no checksum
  seam: none                 objstore.store_object -> S3Repository.put_stream (sha256 recorded), no codec
  seam: zstd                 + zstd level 3
  seam: zstd + AES-256-GCM   + envelope encryption (data key wrapped by a key file): what backups do
Throughput is input (plaintext) bytes / wall seconds; the median of the rounds is reported. Goal: the
encrypted+compressed seam >= 0.8x the plain boto3 upload. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup_tools.pg.ports import free_port  # noqa: E402
from backup_tools.repo.objects import drain, new_sealing, open_object, store_object  # noqa: E402
from backup_tools.repo.s3.repository import S3Options, S3Repository  # noqa: E402
from backup_tools.security.keys import generate_key_file_text  # noqa: E402

BUCKET, CREDS = "bench", ("bench-key", "bench-secret")
MB = 1_000_000


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto server in its own process (so the client and the server do not share one interpreter lock)."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start within 30 s")


def make_basebackup(work: Path, scale: float) -> Path:
    """Seed a cluster and take a tar-format base backup of it; return base.tar."""
    import psycopg

    from backup_tools.pg.bin import find_pg_bin
    from fixtures.cluster import Cluster
    from fixtures.seed import seed_database

    pg = find_pg_bin()
    cluster = Cluster("bench", pg=pg, base_dir=work)
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            seed_database(conn, scale=scale)
        out = work / "basebackup"
        subprocess.run([str(pg.tool("pg_basebackup")), "-h", str(cluster.socket_dir), "-p", str(cluster.port),
                        "-U", "postgres", "-D", str(out), "-Ft", "-X", "fetch", "-c", "fast", "--no-sync"],
                       check=True, capture_output=True)  # fmt: skip
    finally:
        cluster.teardown()
    return out / "base.tar"


def bench_one(client, endpoint: str, data: Path, what: str, *, key_file: Path, rounds: int, tag: str) -> None:
    """Upload one file with every variant `rounds` times (interleaved) and print its table."""
    size = data.stat().st_size
    repo = S3Repository(BUCKET, tag, S3Options(endpoint_url=endpoint, region="us-east-1", credentials=CREDS))
    variants = {
        "boto3 upload_fileobj (plain)": None,
        "seam: none": ("none", None),
        "seam: zstd": ("zstd", None),
        "seam: zstd + AES-256-GCM": ("zstd", key_file),
    }
    times: dict[str, list[float]] = {v: [] for v in variants}
    stored: dict[str, int] = {}
    for r in range(rounds):
        for i, (name, how) in enumerate(variants.items()):
            key = f"round{r}/variant{i}"
            began = time.perf_counter()
            if how is None:
                with open(data, "rb") as f:
                    client.upload_fileobj(f, BUCKET, f"{tag}/{key}", Config=repo.transfer)
                times[name].append(time.perf_counter() - began)
                stored[name] = size
                client.delete_object(Bucket=BUCKET, Key=f"{tag}/{key}")
                continue
            codec, kf = how
            sealing = new_sealing(kf)
            obj = store_object(repo, key, data, codec=codec, sealing=sealing, scope="bench")
            times[name].append(time.perf_counter() - began)
            stored[name] = obj.size
            if r == 0:  # prove the stored object reads back as the same plaintext (not timed)
                drain(open_object(repo, key, codec=codec, sealing=sealing, scope="bench", sha256=obj.sha256,
                                  plain_sha256=obj.plain_sha256, plain_size=obj.plain_size))  # fmt: skip
            repo.delete(key)  # keep moto's memory small (not timed)
    base = statistics.median(times["boto3 upload_fileobj (plain)"])
    print(f"\n{what}: {data.name}, {size / MB:.1f} MB\n")
    print("| variant | MB/s (plaintext) | seconds | stored MB | vs boto3 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in variants:
        secs = statistics.median(times[name])
        print(f"| {name} | {size / MB / secs:.1f} | {secs:.2f} | {stored[name] / MB:.1f} | {base / secs:.2f}x |")


def main() -> None:
    """Run every variant --rounds times against one moto server and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="seeded data scale (1.0 is about 100k rows)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--input", help="upload this file instead of a fresh base backup")
    parser.add_argument("--noise-mb", type=int, default=96, help="size of the incompressible second data set")
    args = parser.parse_args()
    if os.geteuid() == 0 and not args.input:  # PostgreSQL refuses root: rerun as the suite's unprivileged user
        os.execvp("runuser", ["runuser", "-u", "pgdrill", "--", sys.executable, *sys.argv])
    work = Path(tempfile.mkdtemp(prefix="pgdrill-bench-s3-"))
    moto, endpoint = start_moto()
    try:
        data = Path(args.input) if args.input else make_basebackup(work, args.scale)
        key_file = work / "bench.key"
        key_file.write_text(generate_key_file_text())
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=CREDS[0],
                              aws_secret_access_key=CREDS[1])  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        label = "--input" if args.input else f"pg_basebackup -Ft of seeded data, scale {args.scale}"
        sets = [(data, label)]
        if not args.input:  # worst case for the seam: documents already compressed (PDF/JPEG): nothing to gain
            noise = work / "incompressible.bin"
            noise.write_bytes(os.urandom(args.noise_mb * MB))
            sets.append((noise, "random bytes (stand-in for already-compressed documents)"))
        cpu = platform.processor() or platform.machine()
        print(f"\nmoto server process on 127.0.0.1, {args.rounds} rounds, median; {os.cpu_count()} CPUs ({cpu}),"
              f" Python {platform.python_version()}, {platform.platform()}")  # fmt: skip
        for n, (path, what) in enumerate(sets):
            bench_one(client, endpoint, path, what, key_file=key_file, rounds=args.rounds, tag=f"set{n}")
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
