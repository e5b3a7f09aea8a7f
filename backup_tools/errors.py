"""One error hierarchy for backup_tools; each error says what failed and what to do."""


class BackupToolsError(Exception):
    """An operation failed; the message says what was tried and what to do next."""

    exit_code = 1


class UsageError(BackupToolsError):
    """Bad usage or bad input (exit code 2)."""

    exit_code = 2


class BinaryNotFound(UsageError):
    """A PostgreSQL program could not be found or run."""


class VersionMismatch(UsageError):
    """A tool, server or repository has an incompatible PostgreSQL major version."""


class ToolFailed(BackupToolsError):
    """A PostgreSQL tool exited non-zero or timed out."""


class ConnectionFailed(BackupToolsError):
    """The database could not be reached with the given connection string."""


class RepositoryError(BackupToolsError):
    """The backup repository is unreachable, locked or inconsistent."""


class DocumentMissing(RepositoryError):
    """An object or document is not (or no longer) in its repository or bucket."""


class IntegrityError(BackupToolsError):
    """Stored data does not match its recorded checksum or manifest."""


class BackupNotFound(UsageError):
    """No backup matches the requested id or recovery target."""


class RecoveryError(BackupToolsError):
    """A restored cluster did not reach its recovery target."""


class WalMissing(BackupToolsError):
    """A WAL file is not in the archive (wal-fetch exit code 1)."""


class EncryptionKeyError(BackupToolsError):
    """The encryption key is missing or wrong; nothing was decrypted (exit code 3)."""

    exit_code = 3
