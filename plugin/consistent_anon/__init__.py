"""Consistent anonymization for Orthanc: keyed pseudonyms that keep every UID relationship."""
from .adapter import EXPLORER_SCRIPT, register

__all__ = ["EXPLORER_SCRIPT", "register"]
