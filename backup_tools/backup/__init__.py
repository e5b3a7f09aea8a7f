"""Taking backups: physical (pg_basebackup), logical (pg_dump), tar streams, file-bucket backups."""
