"""Encryption (AES-256-GCM), envelope keys (key file or KMS) and signed evidence bundles."""
