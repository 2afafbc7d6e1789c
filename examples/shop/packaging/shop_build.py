"""A PEP 517 build backend for the example shop: builds its wheel with the
standard library alone (zipfile), from src/ and pyproject.toml's [project]."""
import base64
import hashlib
import os
import zipfile

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every entry of the wheel gets this time, so the same source gives the same wheel.
EPOCH = (1980, 1, 1, 0, 0, 0)


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        if tomllib is None:
            raise RuntimeError("building the shop needs Python 3.11 or newer (tomllib)")
        return tomllib.load(f)["project"]


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = _project()
    name, version = project["name"], project["version"]
    dist_info = f"{name}-{version}.dist-info"
    files = []
    src = os.path.join(ROOT, "src")
    for directory, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for file in sorted(names):
            path = os.path.join(directory, file)
            with open(path, "rb") as f:
                files.append((os.path.relpath(path, src), f.read()))
    scripts = "".join(f"{k} = {v}\n" for k, v in project.get("scripts", {}).items())
    files += [
        (f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: shop_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{dist_info}/entry_points.txt", f"[console_scripts]\n{scripts}".encode()),
    ]
    record = []
    for path, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}\n")
    record.append(f"{dist_info}/RECORD,,\n")
    files.append((f"{dist_info}/RECORD", "".join(record).encode()))
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files:
            info = zipfile.ZipInfo(path, EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return wheel
