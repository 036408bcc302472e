"""Build dist/clearsky-<version>.zip, installable with QGIS "Install from ZIP".

The zip holds one folder `clearsky/` with only what runs, plus the pure-Python
dependencies copied from this venv into `clearsky/_vendor/` with their imports
rewritten (`import pystac` -> `from clearsky._vendor import pystac`), so the plugin
never sees, nor leaks into, another plugin's copy. The zip is byte-for-byte
repeatable: sorted entries, fixed timestamps and permissions.

Usage: python scripts/package.py [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import ast
import configparser
import importlib.util
import io
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "clearsky"
VENDOR = f"{PACKAGE}._vendor"
TOP_FILES = ("metadata.txt", "__init__.py", "plugin.py", "dependencies.py", "LICENSE")
TOP_DIRS = ("core", "ui", "provider", "resources")  # resources/: icon.svg, help/ (the Help page)
# Opened by path at run time (the icon; the dialog's Help button and each algorithm's helpUrl):
# a zip without one of them is not built.
REQUIRED = ("resources/icon.svg", "resources/help/index.html")
# distribution name -> the import names it provides; six because dateutil imports it.
BUNDLED = {
    "pystac-client": ("pystac_client",),
    "pystac": ("pystac",),
    "python-dateutil": ("dateutil",),
    "six": ("six",),
}
SKIP_DIRS = {"__pycache__", "tests", "test"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", ".swp", "~")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can store
LICENCE_NAME = re.compile(r"(LICEN[CS]E|COPYING|NOTICE)", re.IGNORECASE)


# -- import rewriting ------------------------------------------------------------------------
def _top(name: str) -> str:
    return name.split(".")[0]


def _import_replacement(node: ast.Import, names: frozenset, prefix: str) -> str:
    """`import a, b.c as d` -> equivalent statements, vendored names taken from `prefix`."""
    parts = []
    for alias in node.names:
        if _top(alias.name) not in names:
            parts.append(f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else ""))
        elif alias.asname:  # import pkg.sub as z  ->  from prefix.pkg import sub as z
            parent, _, leaf = f"{prefix}.{alias.name}".rpartition(".")
            parts.append(f"from {parent} import {leaf} as {alias.asname}")
        else:  # import pkg.sub binds `pkg` and loads pkg.sub
            parts.append(f"from {prefix} import {_top(alias.name)}")
            if "." in alias.name:
                parts.append(f"import {prefix}.{alias.name}")
    return "; ".join(parts)


def _import_from_replacement(node: ast.ImportFrom, prefix: str) -> str:
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    return f"from {prefix}.{node.module} import {names}"


def rewrite_imports(source: str, names: Iterable[str], prefix: str = VENDOR) -> str:
    """Point absolute imports of `names` (and module-name string arguments) at `prefix`.

    Covers `import x`, `import x.y`, `import x.y as z`, `from x.y import z`, and string
    arguments such as `importlib.resources.files("pystac.static")`. Relative imports stay.
    Line numbers are kept, so tracebacks point at the right line of the original file.
    """
    names = frozenset(names)
    alternatives = "|".join(map(re.escape, sorted(names)))
    module_string = re.compile(rf"^({alternatives})(\.[A-Za-z_]\w*)*$")
    tree = ast.parse(source)
    edits: List[Tuple[int, int, int, int, str]] = []  # start line/col, end line/col, text
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Import) and any(_top(a.name) in names for a in node.names):
            text = _import_replacement(node, names, prefix)
        elif (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
              and _top(node.module) in names):
            text = _import_from_replacement(node, prefix)
        elif isinstance(node, ast.Call):
            for arg in node.args:
                if (isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                        and module_string.match(arg.value)):
                    quote = source.splitlines()[arg.lineno - 1][arg.col_offset]
                    edits.append((arg.lineno, arg.col_offset, arg.end_lineno, arg.end_col_offset,
                                  f"{quote}{prefix}.{arg.value}{quote}"))
        if text is not None:
            text += "\n" * (node.end_lineno - node.lineno)  # keep the line count
            edits.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, text))
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def at(line: int, col: int) -> int:  # ast columns count UTF-8 bytes
        return offsets[line - 1] + len(lines[line - 1].encode()[:col].decode())

    out = source
    for start_l, start_c, end_l, end_c, text in sorted(edits, reverse=True):
        out = out[: at(start_l, start_c)] + text + out[at(end_l, end_c):]
    return out


# -- what goes into the zip ------------------------------------------------------------------
def plugin_version(root: Path = ROOT) -> str:
    parser = configparser.ConfigParser()
    parser.read(root / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


def _keep(path: Path) -> bool:
    return not (
        any(part in SKIP_DIRS or part.startswith(".") for part in path.parts)
        or path.name.endswith(SKIP_SUFFIXES)
    )


def plugin_files(root: Path = ROOT) -> Iterator[Tuple[str, bytes]]:
    """(path inside the zip, content) for the plugin's own files."""
    for name in TOP_FILES:
        yield f"{PACKAGE}/{name}", (root / name).read_bytes()
    for folder in TOP_DIRS:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and _keep(rel):
                yield f"{PACKAGE}/{rel.as_posix()}", path.read_bytes()


def _licence_text(dist: metadata.Distribution) -> List[Tuple[str, bytes]]:
    """The licence file(s) from the distribution's metadata folder."""
    found = [f for f in (dist.files or [])
             if f.parts[0].endswith(".dist-info") and LICENCE_NAME.search(f.name)]
    texts = [(f.name, Path(dist.locate_file(f)).read_bytes()) for f in found]
    if not texts:  # Debian installs some packages (six) without one; its copyright file has it
        debian = Path("/usr/share/doc") / f"python3-{dist.metadata['Name'].lower()}" / "copyright"
        if debian.is_file():
            texts = [("copyright", debian.read_bytes())]
    if not texts:
        raise SystemExit(f"package: no licence file found for {dist.metadata['Name']}")
    return texts


def _module_files(import_name: str) -> Iterator[Tuple[str, Path]]:
    """(path relative to site-packages, file) for an installed module or package."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"package: {import_name} is not installed in {sys.prefix}")
    origin = Path(spec.origin)
    if origin.name != "__init__.py":  # a single-file module such as six.py
        yield origin.name, origin
        return
    base = origin.parent
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base.parent)
        if path.is_file() and _keep(rel):
            yield rel.as_posix(), path


def vendored_files(bundled: Dict[str, Tuple[str, ...]] = BUNDLED) -> Iterator[Tuple[str, bytes]]:
    """The bundled distributions' modules (imports rewritten), data files and licences."""
    import_names = [n for names in bundled.values() for n in names]
    listing = []
    for dist_name, tops in bundled.items():
        dist = metadata.distribution(dist_name)
        name, version = dist.metadata["Name"], dist.version
        listing.append(f"{name}=={version}")
        for top in tops:
            for rel, path in _module_files(top):
                data = path.read_bytes()
                if path.suffix == ".py":
                    data = rewrite_imports(data.decode("utf-8"), import_names).encode("utf-8")
                yield f"{PACKAGE}/_vendor/{rel}", data
        for file_name, text in _licence_text(dist):
            yield f"{PACKAGE}/_vendor/licenses/{name}-{version}/{file_name}", text
    init = (
        '"""Pure-Python packages bundled with Clearsky, their imports rewritten to live here.\n\n'
        "Import them as `from clearsky._vendor import pystac_client`; never put this folder\n"
        'on sys.path. vendor.txt lists the versions, licenses/ their licences.\n"""\n'
    )
    yield f"{PACKAGE}/_vendor/__init__.py", init.encode()
    yield f"{PACKAGE}/_vendor/vendor.txt", ("\n".join(sorted(listing)) + "\n").encode()


def build_package(root: Path = ROOT, output_dir: Path = ROOT / "dist") -> Path:
    """Write the zip and return its path."""
    entries = dict(plugin_files(root))
    missing = [name for name in REQUIRED if f"{PACKAGE}/{name}" not in entries]
    if missing:
        raise SystemExit(f"package: missing {', '.join(missing)}")
    for name, data in vendored_files():
        if name in entries:
            raise SystemExit(f"package: {name} would be written twice")
        entries[name] = data
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{PACKAGE}-{plugin_version(root)}.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so the permissions below are honoured
            info.external_attr = 0o100644 << 16
            archive.writestr(info, entries[name], compresslevel=9)
    target.write_bytes(buffer.getvalue())
    return target


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    path = build_package(ROOT, args.output_dir)
    with zipfile.ZipFile(path) as archive:
        count = len(archive.namelist())
    print(f"{path} ({path.stat().st_size // 1024} KiB, {count} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
