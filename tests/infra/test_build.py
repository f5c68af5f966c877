"""`make build` (infra/scripts/build.py): what lands in the zips, and that it runs as Lambda runs it.

The import tests build the function and the dependency layer for this machine (pip downloads wheels
from the package index, as `make build` does) and import the app from them alone, with only the
modules the managed runtime adds (boto3 and its dependencies) besides the standard library.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "layers" / "dependencies" / "requirements.txt"
# What the managed python3.12 runtime has besides the standard library (not shipped in the layer).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
ELF_MACHINES = {"arm64": 183, "x86_64": 62}  # e_machine: EM_AARCH64, EM_X86_64


def _load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "agentstream_build", ROOT / "infra" / "scripts" / "build.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_script()
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _fake_runtime_layer(root: Path) -> Path:
    (root / "python" / "lambda_streaming").mkdir(parents=True)
    (root / "python" / "lambda_streaming" / "__init__.py").write_text('"""runtime"""\n')
    (root / "bootstrap").write_text("#!/bin/sh\nexec true\n")
    (root / "bootstrap").chmod(0o755)
    (root / "README.md").write_text("docs\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_runtime.py").write_text("")
    return root


def test_layer_pins_every_dependency_of_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = _pins()
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        if name == "boto3":  # in the managed runtime; see the comment in requirements.txt
            assert name not in pins
            continue
        assert name in pins, f"{name} is a dependency but is not pinned in {REQUIREMENTS}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def test_runtime_layer_ships_bootstrap_and_python_only(tmp_path: Path) -> None:
    source = _fake_runtime_layer(tmp_path / "src")
    build.stage_streaming_runtime(tmp_path / "stage", source)
    build.write_zip(tmp_path / "stage", tmp_path / "layer.zip")
    with zipfile.ZipFile(tmp_path / "layer.zip") as archive:
        names = {n for n in archive.namelist() if "__pycache__" not in n}
        bootstrap_mode = archive.getinfo("bootstrap").external_attr >> 16
    assert names == {"bootstrap", "python/lambda_streaming/__init__.py"}
    assert bootstrap_mode & 0o777 == 0o755


def test_runtime_layer_without_bootstrap_fails_the_build(tmp_path: Path) -> None:
    source = _fake_runtime_layer(tmp_path / "src")
    (source / "bootstrap").unlink()
    with pytest.raises(SystemExit, match="bootstrap"):
        build.stage_streaming_runtime(tmp_path / "stage", source)


def test_zips_are_reproducible(tmp_path: Path) -> None:
    source = _fake_runtime_layer(tmp_path / "src")
    build.write_zip(source, tmp_path / "one.zip")
    (source / "README.md").write_text("docs\n")  # same bytes, new mtime
    build.write_zip(source, tmp_path / "two.zip")
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()


def test_function_zip_holds_the_package_without_caches(tmp_path: Path) -> None:
    build.stage_function(tmp_path / "function")
    build.write_zip(tmp_path / "function", tmp_path / "function.zip")
    with zipfile.ZipFile(tmp_path / "function.zip") as archive:
        names = archive.namelist()
    assert "agentstream/__init__.py" in names
    assert "agentstream/store/schema.py" in names
    assert not [n for n in names if ".egg-info" in n or (n.endswith(".pyc") and "cpython-312" not in n)]
    assert {n.split("/")[0] for n in names} == {"agentstream"}


@pytest.fixture(scope="session")
def host_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Function + dependency layer for this machine's arch and Python, plus the runtime's own modules."""
    root = tmp_path_factory.mktemp("host-build")
    build.stage_function(root / "function")
    build.stage_dependencies(root / "layer", build.host_arch(), python_version=HOST_PYTHON)
    runtime = root / "runtime"
    runtime.mkdir()
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        assert spec is not None, name
        assert spec.origin is not None, name
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (runtime / source.name).symlink_to(source)
    return root


def _import_in_lambda_layout(root: Path, modules: list[str]) -> subprocess.CompletedProcess[str]:
    """Import in a fresh interpreter that sees only the stdlib and what Lambda would put on sys.path."""
    paths = [str(root / "function"), str(root / "layer" / "python"), str(root / "runtime")]
    code = f"import sys; sys.path[:0] = {paths!r}\n" + "".join(f"import {m}\n" for m in modules)
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_built_artifacts_import_the_app_and_its_dependencies(host_build: Path) -> None:
    result = _import_in_lambda_layout(
        host_build, ["agentstream.config", "fastapi", "mangum", "httpx", "pydantic_settings"]
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_built_artifacts_import_the_streaming_handler(host_build: Path) -> None:
    result = _import_in_lambda_layout(host_build, ["agentstream.handlers.stream"])
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_dependency_layer_is_built_for_the_lambda_architecture(tmp_path: Path) -> None:
    build.stage_dependencies(tmp_path, "arm64")
    libraries = list((tmp_path / "python").rglob("*.so"))
    assert libraries, "expected compiled extensions (pydantic-core)"
    for library in libraries:
        header = library.read_bytes()[:20]
        assert header[:4] == b"\x7fELF", library
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINES["arm64"], library
    assert all("cpython-312" in lib.name for lib in libraries if "cpython" in lib.name)
    assert not (tmp_path / "python" / "bin").exists()
