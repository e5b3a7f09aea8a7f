"""One error hierarchy for backup_tools, a base per area; each error says what failed and what to do.

Areas and exit codes: usage (2), repository (1), integrity (1), key (3), recovery (1), tool (1). Every error
raised by backup_tools derives from one of these bases (docs/architecture.md, "Errors and exit codes"). A
missing backup (BackupNotFound) is a repository error: the operation failed (1), the usage was fine.
"""


class BackupToolsError(Exception):
    """An operation failed; the message says what was tried and what to do next."""

    exit_code = 1


# usage: bad input, nothing was changed


class UsageError(BackupToolsError):
    """Bad usage or bad input (exit code 2)."""

    exit_code = 2


class BinaryNotFound(UsageError):
    """A PostgreSQL program could not be found or run."""


class VersionMismatch(UsageError):
    """A tool, server or repository has an incompatible PostgreSQL major version."""


class ResidencyError(UsageError):
    """A repository is outside the allowed regions; nothing was written (fix the repository URL or the allowed list)."""


# repository: where backups live


class RepositoryError(BackupToolsError):
    """The backup repository is unreachable, locked or inconsistent."""


class BackupNotFound(RepositoryError):
    """No backup matches the requested id or recovery target (the operation failed: exit code 1, not usage)."""


class DocumentMissing(RepositoryError):
    """An object or document is not (or no longer) in its repository or bucket."""


class RestorePending(RepositoryError):
    """An archived (GLACIER / DEEP_ARCHIVE) object is being restored; retry the read later."""


class WalMissing(DocumentMissing):
    """A WAL file is not in the archive (wal-fetch exit code 1; any other error stops recovery)."""


# integrity: what was read is not what was written


class IntegrityCheckFailed(BackupToolsError):
    """Stored data does not match its recorded checksum, manifest or fingerprint (not psycopg's IntegrityError)."""


# key: encryption


class EncryptionKeyError(BackupToolsError):
    """The encryption key is missing or wrong; nothing was decrypted (exit code 3)."""

    exit_code = 3


# recovery: a restored server


class RecoveryError(BackupToolsError):
    """A restored cluster did not reach its recovery target."""


# tool: PostgreSQL programs, servers and connections


class ToolError(BackupToolsError):
    """A PostgreSQL program, server or connection failed."""


class ToolFailed(ToolError):
    """A PostgreSQL tool exited non-zero or timed out."""


class ConnectionFailed(ToolError):
    """The database could not be reached with the given connection string."""


class ClusterError(ToolError):
    """A suite-managed cluster failed to start, stop, answer or recover."""
