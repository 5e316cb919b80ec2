"""Re-identification data: the Encrypted Attributes Sequence for a project's recipients."""
