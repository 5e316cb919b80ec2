"""The verification of a whole anonymized set against its source."""
