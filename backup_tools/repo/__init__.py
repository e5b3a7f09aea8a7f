"""Backup repositories: one interface (file:// and s3://), the object seam (compress, encrypt, verify), buckets."""
