"""Third-party pure-Python packages: the plugin's bundled copies first, then the venv's.

The plugin zip carries pystac-client and pystac under `clearsky/_vendor` with their
imports rewritten, so they never clash with another plugin's copy.
"""

try:  # packaged plugin
    from .._vendor import pystac, pystac_client
except ImportError:  # development checkout: the venv's pinned copies
    import pystac  # noqa: F401
    import pystac_client  # noqa: F401

__all__ = ["pystac", "pystac_client"]
