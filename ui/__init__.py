"""QGIS user interface: the Clearsky dialog, its map tools, tasks and layer styling."""
