"""Burned-in text in pixels: which source instances may carry it (the gate, from the header alone),
what the call then does with them (refuse, flag, accept, clean), the rules that say where the text
is, and the blanking of those rectangles in the stored pixel values. Pure logic: it knows nothing
of Orthanc; the pipeline calls it where it already holds each instance's header."""
