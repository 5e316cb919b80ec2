"""Sites with a Python script of their own (orthanc-python loads one) register the plugin from it."""
from __future__ import annotations

import time

import pytest

from conftest import upload
from orthanc_server import RUNTIME

SITE_SCRIPT = '''
import sys
import orthanc

sys.path.insert(0, "{plugin_dir}")          # where plugin/ was installed
import consistent_anon                      # the two lines of docs/deployment.md
consistent_anon.register(orthanc)

changes = []

def on_change(change_type, level, resource_id):   # the site's own change callback still works
    changes.append(change_type)

orthanc.RegisterOnChangeCallback(on_change)

def hello(output, uri, **request):                  # and a route of the site's own
    output.AnswerBuffer("changes seen: %d" % len(changes), "text/plain")

orthanc.RegisterRestCallback("/site/hello", hello)
'''


def test_the_plugin_registers_from_a_sites_own_script(server_factory, study):
    server = server_factory(start=False)
    script = server.workdir / "hospital_plugins.py"
    script.write_text(SITE_SCRIPT.format(plugin_dir=RUNTIME.inside(server.workdir / "plugin")))
    server.configure({"PythonScript": RUNTIME.inside(script)})
    server.start()
    uploaded = upload(server, study)
    series = sorted({answer["ParentSeries"] for answer in uploaded.values()})
    answers = [server.post(f"/series/{s}/anonymize", json={}).json() for s in series]
    assert len({server.json(f"/series/{a['ID']}")["ParentStudy"] for a in answers}) == 1
    assert server.get("/tools/generate-uid", params={"level": "frame-of-reference"}).status_code == 200
    hello = server.get("/site/hello")
    assert hello.status_code == 200 and hello.text.startswith("changes seen: ")
    assert int(hello.text.split(": ")[1]) > 0  # the site's own callback runs beside the plugin


GATEWAY_SITE_SCRIPT = '''
import sys
import orthanc

sys.path.insert(0, "{plugin_dir}")
import consistent_anon
consistent_anon.register(orthanc)           # with OnArrival, the plugin holds Python's one change callback

changes = []

def on_change(change_type, level, resource_id):
    changes.append(change_type)

consistent_anon.add_change_handler(orthanc, on_change)   # the site's handler, called beside the gateway's

def hello(output, uri, **request):
    output.AnswerBuffer("changes seen: %d" % len(changes), "text/plain")

orthanc.RegisterRestCallback("/site/hello", hello)
'''


def test_with_the_gateway_a_sites_change_handler_runs_beside_it(server_factory, study):
    server = server_factory(start=False, config={"ConsistentAnonymization": {"OnArrival": {}}})
    script = server.workdir / "hospital_plugins.py"
    script.write_text(GATEWAY_SITE_SCRIPT.format(plugin_dir=RUNTIME.inside(server.workdir / "plugin")))
    server.configure({"PythonScript": RUNTIME.inside(script)})
    server.start()
    upload(server, study)
    deadline = time.monotonic() + 60
    while server.get("/site/hello").text == "changes seen: 0" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert int(server.get("/site/hello").text.split(": ")[1]) > 0
    assert server.get("/consistent-anonymization/gateway").status_code == 200


def test_with_the_gateway_a_change_callback_registered_before_the_plugin_stops_orthanc_saying_what_to_do(
        server_factory):
    server = server_factory(start=False, config={"ConsistentAnonymization": {"OnArrival": {}}})
    script = server.workdir / "hospital_plugins.py"
    script.write_text(f'''
import sys
import orthanc
sys.path.insert(0, "{RUNTIME.inside(server.workdir / "plugin")}")
orthanc.RegisterOnChangeCallback(lambda change_type, level, resource_id: None)
import consistent_anon
consistent_anon.register(orthanc)
''')
    server.configure({"PythonScript": RUNTIME.inside(script)})
    with pytest.raises(RuntimeError, match=r"OnArrival needs the Python plugin's change callback.*add_change_handler"):
        server.start()
