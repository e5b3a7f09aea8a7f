"""Keeping a repository healthy over time: verify, offsite copy, retention, prune, rekey."""
