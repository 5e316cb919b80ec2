"""What one POST /instances/{id}/anonymize costs inside a real Orthanc, counted rather than timed
(the call is the per-arrival work of plugin/lua/anonymize-on-arrival.lua): Orthanc's calls, syncs
to disk, reads of the key file, parses of the body, key derivations. A site script (as
test_site_script.py) registers the plugin with the `orthanc` module wrapped so that its calls
are counted, and serves the counts."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conftest import upload
from orthanc_server import RUNTIME

COUNTING_SCRIPT = '''
import collections, functools, json, os, pathlib, sys, threading
import orthanc

sys.path.insert(0, "{plugin_dir}")
import consistent_anon
from consistent_anon.identity import keys
from consistent_anon.pipeline import options

counts = collections.Counter()
lock = threading.Lock()
COUNTED = ("RestApiGet", "RestApiPost", "RestApiPut", "RestApiDelete", "GetDicomForInstance",
           "GetGlobalProperty", "SetGlobalProperty")


def counted(name, function):
    @functools.wraps(function)
    def call(*args, **kwargs):
        with lock:
            counts[name] += 1
        return function(*args, **kwargs)
    return call


class CountingOrthanc:
    """The orthanc module, its calls to Orthanc counted."""

    def __getattr__(self, name):
        value = getattr(orthanc, name)
        return counted(name, value) if name in COUNTED else value


real_fsync, real_read_text = os.fsync, pathlib.Path.read_text
os.fsync = counted("fsync", real_fsync)
pathlib.Path.read_text = lambda path, *a, **k: (
    counted("key file read", real_read_text) if path.name == keys.KEY_FILE_NAME else real_read_text)(path, *a, **k)
options.parse_json_object = counted("body parse", options.parse_json_object)
keys.project_key = counted("key derivation", keys.project_key)
consistent_anon.register(CountingOrthanc())


def serve(output, uri, **request):
    with lock:
        answer = json.dumps(counts)
        counts.clear()
    output.AnswerBuffer(answer, "application/json")

orthanc.RegisterRestCallback("/test/counts", serve)
'''


def counting_server(server_factory, config=None):
    server = server_factory(start=False, config=config)
    script = server.workdir / "counting.py"
    script.write_text(COUNTING_SCRIPT.format(plugin_dir=RUNTIME.inside(server.workdir / "plugin")))
    server.configure({"PythonScript": RUNTIME.inside(script)})
    return server.start()


def counts_of(server, calls) -> dict[str, float]:
    server.json("/test/counts")  # what came before
    for call in calls:
        call()
    return server.json("/test/counts")


def instance_call(server, instance_id: str):
    def call():
        answer = server.post(f"/instances/{instance_id}/anonymize", json={})
        assert answer.status_code == 200, answer.text
    return call


def test_an_instance_call_reads_the_source_once_asks_native_once_and_syncs_its_entry_once(server_factory, study):
    server = counting_server(server_factory)
    ids = [answer["ID"] for answer in upload(server, study).values()]
    instance_call(server, ids[0])()  # the first call: the key, the key check, native's markers
    calls = 10
    counts = counts_of(server, [instance_call(server, ids[i % len(ids)]) for i in range(calls)])
    assert counts.get("GetDicomForInstance") == calls
    assert counts.get("RestApiPost") == calls  # native's single-instance anonymization
    assert counts.get("fsync") == calls  # one after another: each entry synced before its answer
    # nothing else of Orthanc's: no journal (the call stores nothing), no global property
    assert set(counts) <= {"GetDicomForInstance", "RestApiPost", "fsync", "body parse"}, counts
    assert counts.get("body parse") == calls  # parsed once: the audit entry takes the route's request
    assert "key file read" not in counts and "key derivation" not in counts  # once per process and key


def test_concurrent_instance_calls_share_the_syncs_of_their_audit_entries(server_factory, study):
    server = counting_server(server_factory, {"HttpThreadsCount": 16})
    ids = [answer["ID"] for answer in upload(server, study).values()]
    instance_call(server, ids[0])()
    calls = 48
    with ThreadPoolExecutor(12) as pool:
        counts = counts_of(server, [lambda: list(pool.map(lambda i: instance_call(server, ids[i % len(ids)])(),
                                                             range(calls)))])
    log = server.json("/tools/anonymization-log?since=1&limit=1000")["Entries"]
    assert len(log) == calls and all(entry["outcome"] == "Success" for entry in log)
    assert counts.get("fsync", 0) < calls, counts
