"""The script Orthanc loads (orthanc.json: "PythonScript"). Sites that already run a Python
script of their own import the package and call `register(orthanc)` from theirs instead."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import orthanc  # noqa: E402  (the module exists only inside Orthanc)
from consistent_anon import register  # noqa: E402

register(orthanc)
