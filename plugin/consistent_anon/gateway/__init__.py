"""The anonymizing gateway (the `OnArrival` setting), as plain Python: its settings, checked at
start, and the state of each source instance it handles (to anonymize, stored and awaiting
delivery, failed and retried with backoff, released), rebuilt after a restart from the marks
Orthanc keeps on the sources. The Orthanc side (the change callback, the worker that reads
Orthanc's changes, the store jobs, the routes) is orthanc/arrival.py.
"""
