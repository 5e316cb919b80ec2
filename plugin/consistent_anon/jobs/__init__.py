"""Asynchronous calls as Orthanc-shaped jobs, and the journal of synchronous calls in flight."""
