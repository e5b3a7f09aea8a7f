"""Repository health checks for `backup-tools check`, their config, alert delivery and drill history."""
