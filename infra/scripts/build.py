"""Build the Lambda artifacts without Docker, for the target runtime and architecture.

    python infra/scripts/build.py zips --arch arm64 --out build
        build/function.zip                 the package (the contents of functions/), lands in /var/task
        build/layer-dependencies.zip       python/ = layers/dependencies/requirements.txt, installed from
                                           manylinux wheels for the target architecture (pip --platform)
        build/layer-dependencies-py313.zip the same for Python 3.13, which Lambda Managed Instances run
                                           (serverless.yml's streamManaged; SAM builds its own)
        build/layer-streaming-runtime.zip  bootstrap + python/ of layers/streaming-runtime/ (not its
                                           README or tests); lands in /opt

    python infra/scripts/build.py stage-streaming-runtime --source DIR --into DIR
        what `sam build` runs for the streaming-runtime layer (infra/sam/Makefile)

Zips are reproducible (sorted entries, fixed timestamps), so an unchanged layer keeps its hash and
CloudFormation does not publish a new version of it. When this script runs on the Lambda's Python
version, it also ships bytecode compiled with unchecked-hash invalidation: /var/task and /opt are
read-only on Lambda, so without it every cold start compiles fastapi and pydantic from source again.
Standard library only: it runs from any Python 3.11+ that has pip.
"""

from __future__ import annotations

import argparse
import compileall
import platform
import py_compile
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_PYTHON = "3.12"
# Lambda Managed Instances run Python 3.13 at the earliest (streamManaged / StreamFunctionManaged).
MANAGED_INSTANCES_PYTHON = "3.13"
PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}
# Lambda's limit for the function and all its layers, unzipped.
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def host_arch() -> str:
    """The Lambda architecture name of this machine (for builds that are imported here)."""
    return "arm64" if platform.machine().lower() in {"aarch64", "arm64"} else "x86_64"


def _source_files(src: Path) -> Iterator[Path]:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in _SKIPPED_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and not path.name.endswith((".pyc", ".pyo")):
            yield path


def _copy_tree(src: Path, dest: Path) -> None:
    for path in _source_files(src):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _compile(tree: Path, runtime_dir: str) -> None:
    """Bytecode for the Lambda Python, recorded under the path the tree has on Lambda."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" != LAMBDA_PYTHON:
        return
    compileall.compile_dir(
        tree,
        ddir=runtime_dir,
        quiet=2,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def stage_function(dest: Path, src: Path = ROOT / "functions") -> None:
    """The package tree as it lands in /var/task."""
    if not (src / "agentstream" / "__init__.py").is_file():
        raise SystemExit(f"error: no package at {src / 'agentstream'}")
    _copy_tree(src, dest)
    _compile(dest, "/var/task")


def stage_dependencies(
    dest: Path,
    arch: str,
    requirements: Path = ROOT / "layers" / "dependencies" / "requirements.txt",
    python_version: str = LAMBDA_PYTHON,
) -> None:
    """python/ with the pinned third-party packages, from wheels built for Lambda's Linux and arch."""
    site = dest / "python"
    command = [
        sys.executable, "-m", "pip", "install",
        "--quiet", "--disable-pip-version-check", "--no-compile", "--no-deps",
        "--platform", PLATFORMS[arch], "--implementation", "cp", "--python-version", python_version,
        "--only-binary=:all:", "--target", str(site), "--requirement", str(requirements),
    ]  # fmt: skip
    # --no-deps: requirements.txt pins the whole closure; a missing pin fails the import test.
    subprocess.run(command, check=True)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with this machine's shebang
    if python_version == LAMBDA_PYTHON:
        _compile(site, "/opt/python")


def stage_streaming_runtime(dest: Path, src: Path = ROOT / "layers" / "streaming-runtime") -> None:
    """bootstrap (executable) and python/ of the runtime layer, as they land in /opt."""
    bootstrap, python = src / "bootstrap", src / "python"
    if not bootstrap.is_file() or not python.is_dir():
        raise SystemExit(f"error: {src} needs an executable `bootstrap` and a `python/` folder")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(bootstrap, dest / "bootstrap")
    (dest / "bootstrap").chmod(0o755)
    _copy_tree(python, dest / "python")
    _compile(dest / "python", "/opt/python")


def write_zip(tree: Path, zip_path: Path) -> int:
    """Zip ``tree`` reproducibly; returns its unzipped size in bytes."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(tree).as_posix(), _ZIP_EPOCH)
            mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            archive.writestr(info, data)
    return total


def build_zips(out: Path, arch: str) -> dict[str, Path]:
    stages = {
        "function.zip": stage_function,
        "layer-dependencies.zip": lambda dest: stage_dependencies(dest, arch),
        "layer-dependencies-py313.zip": lambda dest: stage_dependencies(
            dest, arch, python_version=MANAGED_INSTANCES_PYTHON
        ),
        "layer-streaming-runtime.zip": stage_streaming_runtime,
    }
    # What each function unzips: its code and its layers (Lambda's 250 MB limit is per function).
    functions = {
        "stream": ("function.zip", "layer-dependencies.zip", "layer-streaming-runtime.zip"),
        "streamManaged": ("function.zip", "layer-dependencies-py313.zip", "layer-streaming-runtime.zip"),
    }
    built: dict[str, Path] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="agentstream-build-") as scratch:
        for name, stage in stages.items():
            tree = Path(scratch) / name.removesuffix(".zip")
            stage(tree)
            sizes[name] = write_zip(tree, out / name)
            built[name] = out / name
            zipped = (out / name).stat().st_size
            print(f"{out / name}: {zipped / 1e6:.1f} MB ({sizes[name] / 1e6:.1f} MB unzipped)")
    for function, zips in functions.items():
        total = sum(sizes[name] for name in zips)
        if total > MAX_UNZIPPED_BYTES:
            raise SystemExit(
                f"error: {function} and its layers unzip to {total / 1e6:.0f} MB, over Lambda's 250 MB"
            )
    return built


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    zips = commands.add_parser("zips", help="build the function zip and the layer zips")
    zips.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    zips.add_argument("--out", type=Path, default=ROOT / "build")
    stage = commands.add_parser(
        "stage-streaming-runtime", help="copy the runtime layer's content (sam build)"
    )
    stage.add_argument("--source", type=Path, default=ROOT / "layers" / "streaming-runtime")
    stage.add_argument("--into", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "zips":
        build_zips(args.out, args.arch)
    else:
        stage_streaming_runtime(args.into, args.source)


if __name__ == "__main__":
    main()
