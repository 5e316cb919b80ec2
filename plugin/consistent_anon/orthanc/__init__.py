"""The Orthanc-facing layer: the plugin's wiring, its REST routes, the port to Orthanc's API, HTTP answers."""
