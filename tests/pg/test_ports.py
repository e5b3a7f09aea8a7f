"""free_port hands a port to one process only: reservations across processes (pytest-xdist workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backup_tools.pg import ports

# Each process picks ports, prints them and holds them (stays alive) until its stdin closes.
PICK = "from backup_tools.pg.ports import free_port\nimport sys\nprint(*[free_port() for _ in range(int(sys.argv[1]))], flush=True)\nsys.stdin.read()\n"


@pytest.fixture
def ports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGDRILL_PORTS_DIR", str(tmp_path / "ports"))
    return tmp_path / "ports"


def test_concurrent_processes_never_get_the_same_port(ports_dir: Path):
    procs = [subprocess.Popen([sys.executable, "-c", PICK, "150"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]  # fmt: skip
    handed = [set(map(int, p.stdout.readline().split())) for p in procs]  # all four alive, holding theirs
    for p in procs:
        p.communicate(timeout=60)
    assert all(len(h) == 150 for h in handed)
    assert len(set().union(*handed)) == 600, "a port was handed to two processes"
    assert not [p for p in ports_dir.iterdir() if p.name != ".lock"], "an exited process left reservations behind"


def test_a_live_processs_port_is_skipped_and_a_dead_ones_is_taken_over(ports_dir: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", PICK, "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    held = int(holder.stdout.readline())
    assert (ports_dir / str(held)).read_text().strip() == str(holder.pid)
    assert ports._reserve(held) is False
    holder.kill()  # no atexit: the reservation stays, naming a dead pid
    holder.wait()
    assert (ports_dir / str(held)).exists()
    assert ports._reserve(held) is True
    assert (ports_dir / str(held)).read_text().strip() == str(os.getpid())
