#!/usr/bin/env python3
"""The plugin's part of the Orthanc configuration in the Docker image, derived from orthanc.json.

docker/Dockerfile runs this script while it builds the image and writes its output to
/etc/orthanc/consistent-anonymization.json. The orthancteam/orthanc entrypoint merges that file
with the ORTHANC__* environment variables of docker-compose.yml into the configuration Orthanc
runs with.

The settings come from scripts/run_config.py's effective_config, the function `make run` and the
tests build their configuration with, applied to the repository's orthanc.json: the image runs
the plugin script, PythonVerbose, the Python section (AllowThreads) and ConsistentAnonymization section the tests exercise. Only the
plugin's own settings are taken; ports, storage, database index, plugins folder and remote access
are the image's business and come from environment variables. tests/test_docker.py replays the
Dockerfile's COPY steps and this script and compares the result with the tests' configuration.

Usage: plugin_config.py [OUTPUT]   (standard output without OUTPUT)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# The repository, or its copy in the image (/opt/consistent-anonymization): the same layout.
APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR / "scripts"))

from run_config import effective_config  # noqa: E402

#: The settings the image takes from orthanc.json.
PLUGIN_SETTINGS = ("PythonScript", "PythonVerbose", "Python", "ConsistentAnonymization")


def plugin_settings(base: Path = APP_DIR / "orthanc.json", plugin_dir: Path = APP_DIR / "plugin") -> dict:
    # Ports and storage are effective_config's required arguments; the image sets its own.
    config = effective_config(8042, 4242, "/var/lib/orthanc/db", str(plugin_dir), base=base)
    return {name: config[name] for name in PLUGIN_SETTINGS if name in config}


def main(argv: list[str]) -> None:
    text = json.dumps(plugin_settings(), indent=2) + "\n"
    if argv:
        Path(argv[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
