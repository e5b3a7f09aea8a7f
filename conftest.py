"""Root plugin list; command-line options live in fixtures/options.py."""

pytest_plugins = [
    "fixtures.options",
    "fixtures.privileges",
    "fixtures.clusters",
    "fixtures.s3",
    "reports.plugin",
]
