"""Print the CloudFormation that the SAM transform makes of a template, as JSON (no AWS account).

    .venv-tools/bin/python infra/scripts/sam_translate.py template.yaml

Runs with the tooling venv (aws-sam-translator comes with aws-sam-cli). Local code paths are swapped
for placeholder S3 locations first, as `sam package` would swap them for real ones.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

_LOCAL_PATHS = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}


class _NoManagedPolicies:
    """The template names no managed policies, so no IAM lookup is needed."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template_path: Path) -> dict[str, Any]:
    template: dict[str, Any] = yaml_parse(template_path.read_text(encoding="utf-8"))
    for resource in template.get("Resources", {}).values():
        key = _LOCAL_PATHS.get(resource.get("Type", ""))
        if key and isinstance(resource["Properties"].get(key), str):
            resource["Properties"][key] = "s3://placeholder-bucket/placeholder-key"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the transform wants a region, nothing more
    parameters = {"AWS::AccountId": "123456789012"}
    translated: dict[str, Any] = transform(template, parameters, _NoManagedPolicies())
    return translated


if __name__ == "__main__":
    json.dump(translate(Path(sys.argv[1])), sys.stdout, indent=1, default=str)
