"""The audit log: one entry for every anonymization request."""
