"""Consistent anonymization for Orthanc: keyed pseudonyms that keep every UID relationship."""
from .orthanc.plugin import EXPLORER_SCRIPT, register

__all__ = ["EXPLORER_SCRIPT", "register"]
