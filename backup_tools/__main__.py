"""Allow `python -m backup_tools` (used in archive_command, where no console script may be on PATH)."""

from backup_tools.cli.main import main

raise SystemExit(main())
