"""Two Orthancs on one PostgreSQL index and one storage folder, each with its own key: the node
with the key the project did not record is refused, naming the project, and stores nothing."""
from __future__ import annotations


import pytest

from conftest import TEST_KEY, new_patient, upload
from dicom_factory import two_frame_study
from orthanc_server import OrthancServer
from postgres_server import PostgresServer
from test_two_nodes import POSTGRESQL_INDEX, _plugin_available

from consistent_anon.identity.keys import CHECK_FILE_PREFIX

pytestmark = pytest.mark.skipif(not _plugin_available(),
                                reason=f"{POSTGRESQL_INDEX} is missing (Debian package orthanc-postgresql)")


def test_a_node_with_another_key_is_refused():
    postgres = PostgresServer().start()
    keys = (TEST_KEY, TEST_KEY[::-1])

    def configure(node: OrthancServer, number: int) -> None:
        node.configure({"ConsistentAnonymization": {"Key": keys[number - 1]}})
    try:
        with postgres.nodes(configure) as (storage, nodes):
            first, second = nodes
            study = two_frame_study(per_series=1, patient=new_patient())
            uploaded = upload(first, study)
            series = sorted({answer["ParentSeries"] for answer in uploaded.values()})
            assert first.post(f"/series/{series[0]}/anonymize", json={}).status_code == 200
            assert [p.name.startswith(CHECK_FILE_PREFIX) for p in storage.iterdir() if p.name.startswith(".")] == [True]
            before = second.json("/instances")
            refused = second.post(f"/series/{series[1]}/anonymize", json={})
            assert refused.status_code == 500, refused.text
            assert '"default"' in refused.json()["Message"] and TEST_KEY[::-1] not in refused.text
            assert second.json("/instances") == before
            assert first.post(f"/series/{series[1]}/anonymize", json={}).status_code == 200
    finally:
        postgres.cleanup()
