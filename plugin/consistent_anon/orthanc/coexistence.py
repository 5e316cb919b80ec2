"""Other plugins that serve the plugin's routes.

Orthanc gives a REST request to the first plugin route that matches it, in the order the plugins
registered them, which is the order Orthanc loaded them in: the order of the "Plugins" setting,
and inside a folder an order Orthanc does not promise. Orthanc's authorization plugin registers
/tools/bulk-anonymize always, and /{patients,studies,series}/{id}/anonymize when its audit logs
are on, and forwards them to Orthanc's built-in routes: loaded before the Python plugin, it makes
those calls bypass consistent anonymization without any error (native random UIDs).
"""
from __future__ import annotations

from pathlib import PurePath

#: Plugins (by the ID /plugins lists) known to register routes this plugin serves.
CLASHING_ROUTES = {
    "authorization": "/tools/bulk-anonymize (always) and /{patients,studies,series}/{id}/anonymize "
                     "(with its audit logs on)",
}
#: The file name of the Python plugin, as Debian and the Docker images ship it, without extension.
PYTHON_PLUGIN = "libOrthancPython"
_LIBRARY_SUFFIXES = (".so", ".dll", ".dylib")


def _is_library(path: str) -> bool:
    return PurePath(path).suffix.lower() in _LIBRARY_SUFFIXES or ".so." in PurePath(path).name


def python_loaded_first(plugin_paths: list[str]) -> bool:
    """Whether "Plugins" names the Python plugin's file before any other plugin that could
    clash and before any folder (whose files load in an order Orthanc does not promise)."""
    for path in plugin_paths:
        name = PurePath(path).name
        if not _is_library(path):
            return False  # a folder first: its plugins may load before the Python plugin
        if name.lower().startswith(PYTHON_PLUGIN.lower()):
            return True
        if any(plugin in name.lower() for plugin in CLASHING_ROUTES):
            return False
    return False


def route_clash_warning(loaded_plugins: list[str], plugin_paths: list[str]) -> str | None:
    """The warning to log when a loaded plugin may take the plugin's routes first; None if none can."""
    clashing = [plugin for plugin in loaded_plugins if plugin in CLASHING_ROUTES]
    if not clashing or python_loaded_first(plugin_paths):
        return None
    routes = "; ".join(f"the {plugin} plugin serves {CLASHING_ROUTES[plugin]}" for plugin in clashing)
    return (f"Consistent anonymization: {routes}. Orthanc gives a request to the plugin that registered "
            f"its route first: if that plugin was loaded before the Python plugin, those calls bypass "
            f"consistent anonymization (random UIDs, no error). In the \"Plugins\" setting, list the "
            f"Python plugin's file ({PYTHON_PLUGIN}.so) first, before the {', '.join(clashing)} plugin "
            f"and before any folder.")
