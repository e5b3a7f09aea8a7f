"""PostgreSQL programs and SQL: binaries, running tools, connections, ports, data checks; knows no repository."""
