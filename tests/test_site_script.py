"""Sites with a Python script of their own (orthanc-python loads one) register the plugin from it."""
from __future__ import annotations

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
