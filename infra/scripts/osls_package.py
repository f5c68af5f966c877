"""Run `osls package` without an AWS account: serverless.yml -> CloudFormation in an output folder.

    .venv/bin/python infra/scripts/osls_package.py OUT_DIR [--stage dev] [--region us-east-1]

With layers, osls asks CloudFormation once (DescribeStacks) whether the stack already exists; moto's
server answers "it does not" on loopback. Everything else osls does offline. Needs `npm ci` first.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
from pathlib import Path

from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[2]
OSLS = ROOT / "node_modules" / ".bin" / "osls"


def package(out: Path, stage: str = "dev", region: str = "us-east-1") -> None:
    if not OSLS.exists():
        raise SystemExit(f"error: {OSLS} is missing: run `npm ci` (make infra-tools)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # its 400s are the expected "no such stack"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL_CLOUDFORMATION": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": region,
            "SLS_TELEMETRY_DISABLED": "1",
            "SLS_NOTIFICATIONS_MODE": "off",
            "NODE_NO_WARNINGS": "1",  # the AWS SDK's notice about future Node versions
        }
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            env.pop(var, None)
        command = [str(OSLS), "package", "--stage", stage, "--region", region, "--package", str(out)]
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    package(args.out.resolve(), args.stage, args.region)
