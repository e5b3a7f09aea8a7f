"""Regenerate the golden repositories: `python -m tests.golden.make_golden` (a deliberate step; see docs/reliability.md).

Runs tests/golden/build_golden.py under pytest (which, run as root, hands reports/out to the unprivileged user
that runs PostgreSQL) into reports/out/golden-build, then replaces tests/golden/data with the result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "golden" / "data"


def main() -> int:
    """Build into a scratch directory, then swap it in for tests/golden/data."""
    build = ROOT / "reports" / "out" / "golden-build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/golden/build_golden.py", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, env={**os.environ, "PGDRILL_GOLDEN_OUT": str(build)})  # fmt: skip
    if done.returncode != 0 or not (build / "manifest.json").exists():
        print(f"make_golden: building failed (pytest exit {done.returncode}); tests/golden/data left as it was",
              file=sys.stderr)  # fmt: skip
        return 1
    for stale in build.glob("docs-*"):
        shutil.rmtree(stale)
    shutil.rmtree(DATA, ignore_errors=True)
    shutil.copytree(build, DATA)
    for path in [DATA, *DATA.rglob("*")]:  # as a fresh clone would have them (git keeps no modes but +x)
        path.chmod(0o755 if path.is_dir() else 0o644)
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    print(f"make_golden: wrote {DATA.relative_to(ROOT)} ({size / 1024:.0f} KiB); commit it with the format change")
    return 0


if __name__ == "__main__":
    sys.exit(main())
