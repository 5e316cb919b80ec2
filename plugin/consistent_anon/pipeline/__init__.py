"""One anonymization call's work: plan, native de-identification, output step, check, store."""
