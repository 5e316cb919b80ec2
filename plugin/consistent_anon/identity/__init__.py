"""Keys, keyed pseudonyms and date shifts, and the settings that decide identities."""
