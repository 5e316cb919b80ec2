"""Consistent anonymization for Orthanc: keyed pseudonyms that keep every UID relationship."""
from .adapter import register

__all__ = ["register"]
