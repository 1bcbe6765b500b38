"""Install without a clone: the wheel carries every file of the packages and only runtime
requirements (test and lint tools only under ``extra == "dev"``), and
``deploy/pinned_requirements.py`` gives the exact runtime set an offline wheelhouse needs."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("varde", "varde_client", "gateway", "nodes", "launcher")
DEV_TOOLS = {
    "pytest", "pytest-xdist", "pytest-timeout", "hypothesis", "ruff", "mypy", "playwright",
    "schemathesis", "import-linter", "nbclient", "nbformat", "ipykernel", "lifelines",
    "types-pyyaml", "jsonschema", "dockerfile",
}  # fmt: skip


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources, so no build/ directory is left in (or reused from) the
    checkout: a stale build/lib would hide a missing file or add a deleted one."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
         str(src)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (path,) = out.glob("varde-*.whl")
    return path


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode())


@pytest.mark.slow
def test_wheel_requires_only_runtime_dependencies(wheel: Path) -> None:
    requires = [Requirement(r) for r in metadata(wheel).get_all("Requires-Dist") or []]
    runtime = {canonicalize_name(r.name) for r in requires if r.marker is None}
    declared = {canonicalize_name(Requirement(d).name) for d in project()["dependencies"]}  # type: ignore[attr-defined]
    assert runtime == declared
    assert not runtime & DEV_TOOLS, f"test/lint tools at run time: {runtime & DEV_TOOLS}"
    for req in requires:
        if canonicalize_name(req.name) in DEV_TOOLS:
            assert req.marker is not None and req.marker.evaluate({"extra": "dev"})
            assert not req.marker.evaluate({"extra": ""}), str(req)
    assert {"opendp", "fastapi", "httpx", "cryptography", "flwr"} <= runtime


@pytest.mark.slow
def test_wheel_holds_every_file_of_the_packages(wheel: Path) -> None:
    """Each tracked file of our packages (modules, templates, static assets, migrations)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files to compare with")
    tracked = subprocess.run(
        ["git", "ls-files", "--", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(
            zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    missing = [path for path in tracked if path not in names]
    assert not missing, f"files the installed package would lack: {missing}"
    assert "varde = launcher.cli:main" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "bench/", "notebooks/"))]


def pins() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "pinned_requirements.py"), "--extra", "postgres"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    found = {}
    for line in out.stdout.splitlines():
        name, _, version = line.partition("==")
        found[name] = version
    return found


def test_pinned_set_is_the_runtime_closure_and_satisfies_pyproject() -> None:
    pinned = pins()
    assert not set(pinned) & DEV_TOOLS, set(pinned) & DEV_TOOLS
    assert "varde" not in pinned
    for line in [*project()["dependencies"], *project()["optional-dependencies"]["postgres"]]:  # type: ignore[index]
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{name} is not pinned"
        assert req.specifier.contains(pinned[name], prereleases=True), (name, pinned[name])
    # transitive dependencies are pinned too (what pip download needs offline)
    assert {"pydantic-core", "starlette", "numpy", "psycopg-binary"} <= set(pinned)
    assert all(v and v[0].isdigit() for v in pinned.values())
