"""Other plugins serving the plugin's routes: the warning logged at the first call (pure logic)."""
from __future__ import annotations

from consistent_anon.orthanc.coexistence import python_loaded_first, route_clash_warning

PYTHON = "/usr/share/orthanc/plugins/libOrthancPython.so"
AUTHORIZATION = "/usr/share/orthanc/plugins/libOrthancAuthorization.so"


def test_no_warning_without_a_plugin_that_serves_the_routes():
    assert route_clash_warning(["python", "dicom-web", "postgresql-index"], ["/usr/share/orthanc/plugins"]) is None


def test_no_warning_when_the_python_plugin_is_listed_first():
    assert route_clash_warning(["authorization", "python"], [PYTHON, AUTHORIZATION]) is None
    assert route_clash_warning(["authorization", "python"], [PYTHON, "/usr/share/orthanc/plugins"]) is None


def test_a_warning_naming_the_clash_and_the_order_that_works():
    for paths in ([AUTHORIZATION, PYTHON], ["/usr/share/orthanc/plugins"], ["/opt/plugins", PYTHON, AUTHORIZATION],
                  []):
        warning = route_clash_warning(["python", "authorization"], paths)
        assert warning is not None, paths
        assert "authorization plugin" in warning and "/tools/bulk-anonymize" in warning
        assert "/{patients,studies,series}/{id}/anonymize" in warning
        assert '"Plugins"' in warning and "libOrthancPython.so" in warning and "first" in warning


def test_the_python_plugin_is_first_only_when_named_before_any_folder_or_clashing_plugin():
    assert python_loaded_first([PYTHON])
    assert python_loaded_first(["/usr/lib/libOrthancDicomWeb.so", PYTHON, "/usr/share/orthanc/plugins"])
    assert not python_loaded_first(["/usr/share/orthanc/plugins", PYTHON])
    assert not python_loaded_first([AUTHORIZATION, PYTHON])
    assert python_loaded_first(["/usr/lib/libOrthancPython.so.4.0"])
