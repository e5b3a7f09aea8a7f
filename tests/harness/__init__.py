"""Tests of the drill harness: fixtures/ (clusters, S3, seed, measurements) and drill verdicts."""
