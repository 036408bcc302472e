"""The plugin zip: contents, repeatability, vendored imports, and a real install in QGIS."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import zipfile
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path

import pytest

from world.paths import REAL_STAC

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


def _load_packager():
    path = REPO / "scripts" / "package.py"
    spec = importlib.util.spec_from_file_location("clearsky_package", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


package = _load_packager()


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--output-dir",
                          str(tmp_path_factory.mktemp("dist"))], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.split(" (")[0])
    assert path.name == f"clearsky-{package.plugin_version()}.zip"
    return path


@pytest.fixture
def installed(built_zip, tmp_path) -> Path:
    """The zip unzipped into a fresh profile, as QGIS "Install from ZIP" does; the config root."""
    root = tmp_path / "qgis-config"
    plugins = root / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(built_zip) as archive:
        archive.extractall(plugins)
    return root


def test_zip_holds_only_what_runs(built_zip):
    names = zipfile.ZipFile(built_zip).namelist()
    assert names == sorted(names)
    assert all(n.startswith("clearsky/") for n in names)
    for required in ("metadata.txt", "__init__.py", "plugin.py", "dependencies.py", "LICENSE",
                     "resources/icon.svg", "core/deps.py", "provider/provider.py",
                     "_vendor/__init__.py", "_vendor/six.py", "_vendor/pystac/__init__.py",
                     "_vendor/pystac_client/__init__.py", "_vendor/dateutil/__init__.py",
                     "_vendor/dateutil/zoneinfo/dateutil-zoneinfo.tar.gz"):
        assert f"clearsky/{required}" in names, required
    tops = {n.split("/")[1] for n in names if n.count("/") > 1}
    assert tops == {"core", "ui", "provider", "resources", "_vendor"}
    vendored = {n.split("/")[2] for n in names if n.startswith("clearsky/_vendor/")}
    assert vendored == {"__init__.py", "vendor.txt", "licenses", "pystac", "pystac_client",
                        "dateutil", "six.py"}
    bad = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))
           or "/." in n or ".." in n]
    assert bad == []


HELP_PAGE = "clearsky/resources/help/index.html"
HELP_ANCHORS = {"dialog", "buildmosaic", "searchscenes", "clearclips"}


class _Page(HTMLParser):
    """The ids, the links and any external resource of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids, self.links, self.external, self.tags = set(), [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for key, value in attrs:
            value = value or ""
            if key == "id":
                self.ids.add(value)
            if key == "href":
                self.links.append(value)
            if key in ("href", "src") and ("://" in value or value.startswith("//")):
                self.external.append(f"<{tag} {key}={value}>")


def test_zip_ships_the_help_page(built_zip, provider):
    """The dialog's Help button (#dialog) and each algorithm's helpUrl (#<name>) open
    clearsky/resources/help/index.html, a self-contained page inside the zip."""
    archive = zipfile.ZipFile(built_zip)
    assert HELP_PAGE in archive.namelist()
    page = _Page()
    page.feed(archive.read(HELP_PAGE).decode("utf-8"))
    assert page.ids >= HELP_ANCHORS
    assert {a.name() for a in provider.algorithms()} <= page.ids  # helpUrl = page + "#" + name
    assert page.external == []  # no CSS, JS, fonts or images from the network
    assert not page.tags & {"script", "link", "iframe"}
    dangling = [h for h in page.links if h.startswith("#") and h[1:] not in page.ids]
    assert dangling == []


def test_package_refuses_a_plugin_without_its_help(tmp_path):
    root = tmp_path / "plugin"
    for name in package.TOP_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((package.ROOT / name).read_bytes())
    (root / "resources").mkdir()
    (root / "resources" / "icon.svg").write_text("<svg/>")
    with pytest.raises(SystemExit, match="resources/help/index.html"):
        package.build_package(root, tmp_path / "dist")


def test_zip_carries_each_bundled_licence(built_zip):
    archive = zipfile.ZipFile(built_zip)
    licences = [n for n in archive.namelist() if n.startswith("clearsky/_vendor/licenses/")]
    dists = {n.split("/")[3].rsplit("-", 1)[0] for n in licences}
    assert dists == {"pystac", "pystac-client", "python-dateutil", "six"}
    for name in licences:
        text = archive.read(name).decode()
        assert "Permission" in text or "Apache License" in text or "BSD" in text, name
    installed = sorted(f"{d}=={metadata.version(d)}" for d in package.BUNDLED)
    assert archive.read("clearsky/_vendor/vendor.txt").decode().splitlines() == installed
    pinned = (REPO / "requirements.txt").read_text().splitlines()
    assert {"pystac-client==0.9.1", "pystac==1.14.3", "python-dateutil==2.9.0.post0"} <= set(
        pinned) & set(installed)


def test_zip_is_byte_for_byte_repeatable(built_zip, tmp_path):
    again = package.build_package(REPO, tmp_path)
    assert again.read_bytes() == built_zip.read_bytes()
    info = zipfile.ZipFile(again).infolist()
    assert {i.date_time for i in info} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in info} == {0o100644}


def test_rewrite_imports_every_form(tmp_path):
    """Each import form, rewritten, runs against a vendored copy and never the global name."""
    vendor = tmp_path / "clearsky" / "_vendor"
    (vendor / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "clearsky" / "__init__.py").write_text("")
    (vendor / "__init__.py").write_text("")
    (vendor / "pkg" / "__init__.py").write_text("X = 1\n")
    (vendor / "pkg" / "sub" / "__init__.py").write_text("")
    (vendor / "pkg" / "sub" / "leaf.py").write_text("Y = 2\n")
    (vendor / "pkg" / "data.txt").write_text("payload")
    source = textwrap.dedent('''\
        import os, pkg
        import pkg.sub.leaf
        import pkg.sub.leaf as renamed
        from pkg import X
        from pkg.sub.leaf import (
            Y,
        )
        from pkg.sub import leaf as leaf2
        import importlib.resources
        if True:
            import pkg as p2
        from . import sibling_name_is_left_alone
        DATA = importlib.resources.files("pkg").joinpath("data.txt").read_text()
        TEXT = "pkg is mentioned in a plain string"
        ''')
    rewritten = package.rewrite_imports(source, ["pkg"])
    assert len(rewritten.splitlines()) == len(source.splitlines())  # tracebacks keep lines
    assert "from . import sibling_name_is_left_alone" in rewritten
    assert '"pkg is mentioned in a plain string"' in rewritten
    runnable = rewritten.replace("from . import sibling_name_is_left_alone\n", "")
    (vendor / "user.py").write_text(runnable)
    check = (
        "import sys\n"
        "from clearsky._vendor import user as u\n"
        "print(u.pkg.X, u.pkg.sub.leaf.Y, u.renamed.Y, u.X, u.Y, u.leaf2.Y, u.p2.X, u.DATA,\n"
        "      u.os.sep, u.pkg.__name__, 'pkg' in sys.modules)\n"
        "try:\n"
        "    import pkg\n"
        "except ImportError:\n"
        "    print('no global pkg')\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", check], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "1 2 2 1 2 2 1 payload / clearsky._vendor.pkg False", "no global pkg"]


CLEAN_CHECK = r"""
import json, sys
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()

import clearsky
plugin = clearsky.classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()
algorithms = sorted(a.id() for a in registry.providerById("clearsky").algorithms())

from clearsky.core.deps import pystac_client
client = pystac_client.Client.open(sys.argv[1])
items = list(client.search(collections=["sentinel-2-c1-l2a"], max_items=20).items())
leaks = {}
for name in ("pystac", "pystac_client"):
    try:
        __import__(name)
        leaks[name] = "importable"
    except ImportError:
        leaks[name] = "not importable"
result = {
    "algorithms": algorithms,
    "client_module": pystac_client.__name__,
    "item_module": type(items[0]).__module__,
    "items": sorted(item.id for item in items),
    "datetime_type": type(items[0].datetime).__name__,
    "vendored_dateutil": "clearsky._vendor.dateutil.parser" in sys.modules,
    "global_modules": sorted(m for m in ("pystac", "pystac_client") if m in sys.modules),
    "leaks": leaks,
    "path": sys.path,
}
plugin.unload()
app.exitQgis()
print("RESULT " + json.dumps(result))
"""


def test_installed_zip_searches_a_stac_api_in_a_clean_python(installed, stac_api, tmp_path):
    plugins = installed / "profiles" / "default" / "python" / "plugins"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(plugins), "QT_QPA_PLATFORM": "offscreen",
           "QGIS_CUSTOM_CONFIG_PATH": str(installed), "HOME": str(tmp_path),
           "XDG_RUNTIME_DIR": str(tmp_path)}
    out = subprocess.run([SYSTEM_PYTHON, "-s", "-c", CLEAN_CHECK, f"{stac_api}"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert not any(".venv" in p for p in result["path"])
    assert "clearsky:buildmosaic" in result["algorithms"]
    assert result["client_module"] == "clearsky._vendor.pystac_client"
    assert result["item_module"] == "clearsky._vendor.pystac.item"
    assert result["datetime_type"] == "datetime" and result["vendored_dateutil"]
    expected = json.loads((REAL_STAC / "rustac-es-v1-c1-13TDE" / "item-collection.json")
                          .read_text())
    assert result["items"] == sorted(f["id"] for f in expected["features"])
    assert result["global_modules"] == []
    assert result["leaks"] == {"pystac": "not importable", "pystac_client": "not importable"}


def test_installed_zip_is_loaded_by_qgis_process(installed, qgis_process_env, qgis_process):
    """The profile's own plugins folder only: no checkout path, no venv."""
    env = qgis_process_env(plugin_path=None, venv=False)
    assert env["QGIS_CUSTOM_CONFIG_PATH"] == str(installed)  # the same throw-away profile
    assert "QGIS_PLUGINPATH" not in env and "PYTHONPATH" not in env
    out = qgis_process(["list"], env)
    assert out.returncode == 0, out.stderr
    assert "\tclearsky:buildmosaic\t" in out.stdout
    plugins = qgis_process(["plugins"], env)
    assert "* clearsky" in plugins.stdout
