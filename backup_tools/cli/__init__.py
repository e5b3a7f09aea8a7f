"""The backup-tools command line: the only place that parses argv; one module per verb group."""
