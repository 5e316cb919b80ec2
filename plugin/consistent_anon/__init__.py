"""Consistent anonymization for Orthanc: keyed pseudonyms that keep every UID relationship."""
from .orthanc.arrival import add_change_handler
from .orthanc.plugin import EXPLORER_SCRIPT, register

__all__ = ["EXPLORER_SCRIPT", "add_change_handler", "register"]
