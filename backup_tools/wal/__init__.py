"""WAL: archiving (wal-push / wal-fetch, continuity), prefetch, pg_receivewal streaming, LSN arithmetic."""
