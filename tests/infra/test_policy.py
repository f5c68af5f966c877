"""The policy check over both templates (as written, and as the tools compile them):

- no IAM statement allows a wildcard action, and no statement on data (DynamoDB, Secrets Manager,
  Bedrock, KMS, S3) has a wildcard resource; a resource that comes from a parameter is one whose
  ``AllowedPattern`` refuses ``*`` and ``?``, so a deployer cannot widen it either; no AWS-managed
  policy over a data service;
- every DynamoDB table is encrypted (``SSESpecification``) with point-in-time recovery on;
- every function logs to a log group with a retention.

``findings()`` is the check; it is tested against broken copies, so a template that breaks a rule
fails here and the check itself cannot quietly pass everything.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import INFRA_CHECK_ENV, ROOT

Template = dict[str, Any]
DATA_SERVICES = {"dynamodb", "secretsmanager", "bedrock", "kms", "s3"}
FUNCTION_TYPES = {"AWS::Lambda::Function", "AWS::Serverless::Function"}
TABLE_TYPES = {"AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable"}


def _branches(value: Any) -> Iterator[Any]:
    """The values a (possibly conditional) value can take, ``AWS::NoValue`` left out."""
    if isinstance(value, dict) and "Fn::If" in value:
        for branch in value["Fn::If"][1:]:
            yield from _branches(branch)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def _listed(value: Any) -> list[Any]:
    return [v for item in (value if isinstance(value, list) else [value]) for v in _branches(item)]


def _statements(document: Any) -> Iterator[Template]:
    for statement in _listed(document.get("Statement", []) if isinstance(document, dict) else []):
        if isinstance(statement, dict):
            yield statement


def _policy_documents(template: Template) -> Iterator[tuple[str, Any]]:
    for name, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        kind = resource.get("Type")
        if kind == "AWS::IAM::Role":
            for policy in _listed(props.get("Policies", [])):
                yield name, policy.get("PolicyDocument", {})
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            yield name, props.get("PolicyDocument", {})
        elif kind == "AWS::Serverless::Function":
            for policy in _listed(props.get("Policies", [])):
                yield name, policy  # inline statements or SAM policy templates (checked by name)


def _parameter_pattern_refuses_wildcards(template: Template, name: str) -> bool:
    pattern = template.get("Parameters", {}).get(name, {}).get("AllowedPattern")
    if not pattern:
        return False
    probes = ["*", "arn:aws:dynamodb:*:*:table/*", "arn:aws:secretsmanager:us-east-1:123456789012:secret:*"]
    probes += ["arn:aws:bedrock:us-east-1::foundation-model/*", "arn:aws:secretsmanager:*:*:secret:a?"]
    return not any(re.fullmatch(pattern, probe) for probe in probes)


def _resource_findings(template: Template, where: str, resource: Any) -> list[str]:
    found = []
    for value in _listed(resource):
        text = json.dumps(value)
        if (
            isinstance(value, dict)
            and set(value) == {"Ref"}
            and value["Ref"] in template.get("Parameters", {})
        ):
            if not _parameter_pattern_refuses_wildcards(template, value["Ref"]):
                found.append(f"{where}: resource from parameter {value['Ref']} has no pattern refusing '*'")
        elif "*" in text or "?" in text.replace("\\?", ""):
            found.append(f"{where}: wildcard resource {text}")
    return found


def _iam_findings(template: Template) -> list[str]:
    found = []
    for name, document in _policy_documents(template):
        if isinstance(document, str):  # a SAM policy template or managed policy by name
            if any(s in document.lower() for s in DATA_SERVICES):
                found.append(f"{name}: broad managed policy {document} on data")
            continue
        for statement in _statements(document):
            if statement.get("Effect") != "Allow":
                continue
            where = f"{name} {statement.get('Sid', '')}".strip()
            if "NotAction" in statement or "NotResource" in statement:
                found.append(f"{where}: NotAction/NotResource")
                continue
            actions = [str(a) for a in _listed(statement.get("Action", []))]
            found += [f"{where}: wildcard action {a}" for a in actions if "*" in a or "?" in a]
            if any(a.split(":", 1)[0].lower() in DATA_SERVICES for a in actions):
                found += _resource_findings(template, where, statement.get("Resource"))
    for name, resource in template.get("Resources", {}).items():
        for arn in _listed(resource.get("Properties", {}).get("ManagedPolicyArns", [])):
            text = json.dumps(arn).lower()
            if any(s in text for s in ("dynamodb", "secretsmanager", "bedrock", "kms", "s3")):
                found.append(f"{name}: managed policy {text} on data")
    return found


def _table_findings(template: Template) -> list[str]:
    found = []
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") not in TABLE_TYPES:
            continue
        props = resource.get("Properties", {})
        if props.get("SSESpecification", {}).get("SSEEnabled") is not True:
            found.append(f"{name}: not encrypted (SSESpecification.SSEEnabled)")
        if props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is not True:
            found.append(f"{name}: no point-in-time recovery")
    return found


def _log_groups(template: Template) -> dict[str, Template]:
    return {
        name: r.get("Properties", {})
        for name, r in template.get("Resources", {}).items()
        if r.get("Type") == "AWS::Logs::LogGroup"
    }


def _log_findings(template: Template) -> list[str]:
    found = []
    groups = _log_groups(template)
    for name, group in groups.items():
        if group.get("RetentionInDays") in (None, ""):
            found.append(f"{name}: log group without RetentionInDays")
    by_name = {json.dumps(g.get("LogGroupName")): n for n, g in groups.items()}
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") not in FUNCTION_TYPES:
            continue
        props = resource.get("Properties", {})
        target = props.get("LoggingConfig", {}).get("LogGroup")
        if isinstance(target, dict) and target.get("Ref") in groups:
            continue
        function_name = props.get("FunctionName")
        if target is None and isinstance(function_name, str):
            target = f"/aws/lambda/{function_name}"
        if target is None or json.dumps(target) not in by_name:
            found.append(
                f"{name}: no log group of the stack's (Lambda would make one that keeps logs forever)"
            )
    return found


def findings(template: Template) -> list[str]:
    """Every way ``template`` (CloudFormation, before or after the SAM transform) breaks the policy."""
    return _iam_findings(template) + _table_findings(template) + _log_findings(template)


def serverless_findings(config: Template) -> list[str]:
    """``findings`` for serverless.yml as written: its resources, plus the framework's log groups
    (one per function, with ``provider.logRetentionInDays`` unless the function sets its own)."""
    found = findings({"Parameters": {}, **config["resources"]})
    retention = config["provider"].get("logRetentionInDays")
    functions = config.get("functions", {})
    # osls's logical ids: function `stream` -> StreamLambdaFunction, its group StreamLogGroup
    kept = {
        f"{name[0].upper()}{name[1:]}LogGroup"
        for name, function in functions.items()
        if not function.get("disableLogs") and function.get("logRetentionInDays", retention) not in (None, "")
    }
    extensions = config["resources"].get("extensions", {})
    for name, function in functions.items():
        if function.get("disableLogs"):
            # no group of its own: it must log to one of the others (LoggingConfig through an extension)
            logical_id = f"{name[0].upper()}{name[1:]}LambdaFunction"
            props = extensions.get(logical_id, {}).get("Properties", {})
            target = props.get("LoggingConfig", {}).get("LogGroup")
            if not (isinstance(target, dict) and target.get("Ref") in kept):
                found.append(f"function {name}: no log retention")
        elif function.get("logRetentionInDays", retention) in (None, ""):
            found.append(f"function {name}: no log retention")
    iam = config["provider"].get("iam", {})
    if not isinstance(iam.get("role"), str):  # statements for the framework's own role
        statements = iam.get("role", {}).get("statements", [])
        found += _iam_findings(
            {
                "Resources": {
                    "FrameworkRole": {
                        "Type": "AWS::IAM::Policy",
                        "Properties": {"PolicyDocument": {"Statement": statements}},
                    }
                }
            }
        )
    return found


# the templates as written


def test_template_yaml_keeps_the_policy(sam_template: Template) -> None:
    assert findings(sam_template) == []


def test_serverless_yml_keeps_the_policy(serverless_config: Template) -> None:
    assert serverless_findings(serverless_config) == []


# the check finds what it is for


def _role_statements(template: Template) -> list[Template]:
    statements: list[Template] = template["Resources"]["StreamFunctionRole"]["Properties"]["Policies"][0][
        "PolicyDocument"
    ]["Statement"]
    return statements


def _by_sid(template: Template, sid: str) -> Template:
    return next(s for s in _role_statements(template) if isinstance(s, dict) and s.get("Sid") == sid)


def _break(template: Template, how: str) -> Template:
    broken = copy.deepcopy(template)
    resources = broken["Resources"]
    if how == "action":
        _by_sid(broken, "Table")["Action"].append("dynamodb:*")
    elif how == "star":
        _by_sid(broken, "Logs")["Action"] = "*"
    elif how == "table_resource":
        _by_sid(broken, "Table")["Resource"] = [
            {"Fn::GetAtt": ["Table", "Arn"]},
            {"Fn::Sub": "${Table.Arn}/index/*"},
        ]
    elif how == "secret_resource":
        _by_sid(broken, "Secrets")["Resource"] = "arn:aws:secretsmanager:us-east-1:123456789012:secret:*"
    elif how == "bedrock_parameter":
        broken["Parameters"]["BedrockModelArns"].pop("AllowedPattern", None)
    elif how == "conditional_bedrock":
        bedrock = next(
            s for s in _role_statements(broken) if "Fn::If" in s and s["Fn::If"][0] == "BedrockEnabled"
        )
        bedrock["Fn::If"][1]["Resource"] = "arn:aws:bedrock:*::foundation-model/*"
    elif how == "managed_policy":
        resources["StreamFunctionRole"]["Properties"]["ManagedPolicyArns"] = [
            "arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"
        ]
    elif how == "no_sse":
        del resources["Table"]["Properties"]["SSESpecification"]
    elif how == "no_pitr":
        resources["Table"]["Properties"]["PointInTimeRecoverySpecification"] = {
            "PointInTimeRecoveryEnabled": False
        }
    elif how == "no_retention":
        del resources["StreamFunctionLogGroup"]["Properties"]["RetentionInDays"]
    elif how == "no_log_group":
        del resources["StreamFunction"]["Properties"]["LoggingConfig"]
    return broken


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("action", "wildcard action dynamodb:*"),
        ("star", "wildcard action *"),
        ("table_resource", "wildcard resource"),
        ("secret_resource", "wildcard resource"),
        ("bedrock_parameter", "parameter BedrockModelArns has no pattern"),
        ("conditional_bedrock", "wildcard resource"),
        ("managed_policy", "on data"),
        ("no_sse", "not encrypted"),
        ("no_pitr", "point-in-time"),
        ("no_retention", "without RetentionInDays"),
        ("no_log_group", "StreamFunction: no log group"),
    ],
)
def test_the_check_finds_a_broken_template(sam_template: Template, how: str, expected: str) -> None:
    found = findings(_break(sam_template, how))
    assert any(expected in f for f in found), found


def test_the_check_finds_a_serverless_function_without_retention(serverless_config: Template) -> None:
    broken = copy.deepcopy(serverless_config)
    del broken["provider"]["logRetentionInDays"]
    assert any("no log retention" in f for f in serverless_findings(broken))


def test_the_check_finds_a_serverless_function_without_a_log_group(serverless_config: Template) -> None:
    # streamManaged has no group of its own and logs to the stream function's: without that, nothing.
    assert serverless_findings(serverless_config) == []
    broken = copy.deepcopy(serverless_config)
    del broken["resources"]["extensions"]["StreamManagedLambdaFunction"]["Properties"]["LoggingConfig"]
    assert serverless_findings(broken) == ["function streamManaged: no log retention"]


def test_the_secret_and_model_parameters_refuse_wildcards_but_take_real_arns(sam_template: Template) -> None:
    parameters = sam_template["Parameters"]
    secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:agentstream/openai-AbC123"
    model = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0"
    profile = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0"
    for name, good in [
        ("AdminKeySecretArn", secret),
        ("OpenAIApiKeySecretArn", secret),
        ("AnthropicApiKeySecretArn", secret),
        ("EndpointKeySecretArns", secret),
        ("McpHeaderSecretArns", secret),
        ("BedrockModelArns", model),
        ("BedrockModelArns", profile),
    ]:
        pattern = parameters[name]["AllowedPattern"]
        assert re.fullmatch(pattern, good), name
        assert re.fullmatch(pattern, ""), name  # the default: none given
        assert _parameter_pattern_refuses_wildcards(sam_template, name), name


# the templates as the tools compile them (`make infra-check`)


@pytest.fixture(scope="module")
def compiled() -> dict[str, Template]:
    out = Path(os.environ[INFRA_CHECK_ENV])
    out = out if out.is_absolute() else ROOT / out
    tools = ROOT / ".venv-tools" / "bin"
    sam = subprocess.run(
        [
            str(tools / "python"),
            str(ROOT / "infra" / "scripts" / "sam_translate.py"),
            str(ROOT / "template.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    osls = (out / "serverless" / "cloudformation-template-update-stack.json").read_text(encoding="utf-8")
    return {"sam": json.loads(sam.stdout), "osls": json.loads(osls)}


@pytest.mark.infra_tools
@pytest.mark.parametrize("stack", ["sam", "osls"])
def test_the_compiled_stacks_keep_the_policy(compiled: dict[str, Template], stack: str) -> None:
    template = compiled[stack]
    assert findings(template) == []
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert functions, "no function to check"
    assert _log_groups(template), "no log group to check"


def test_both_templates_refuse_the_same_parameter_values(
    sam_template: Template, serverless_config: Template
) -> None:
    for name, parameter in serverless_config["resources"]["Parameters"].items():
        sam = sam_template["Parameters"][name]
        assert parameter.get("AllowedPattern") == sam.get("AllowedPattern"), name
        assert parameter.get("ConstraintDescription") == sam.get("ConstraintDescription"), name
