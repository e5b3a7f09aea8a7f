"""The S3 backend of the repository: objects, streams, storage tiers and Object Lock."""
