"""What the deploy tools make of both templates (run by `make infra-check`, no AWS account needed).

`make infra-check` installs the tooling (.venv-tools: aws-sam-cli, cfn-lint; node_modules: osls),
runs `make build`, `sam build` and `osls package` into $AGENTSTREAM_INFRA_CHECK, then these tests.
A missing tool or output fails them: they never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.infra_tools

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".venv-tools" / "bin"
Template = dict[str, Any]


@pytest.fixture(scope="module")
def out() -> Path:
    path = Path(os.environ["AGENTSTREAM_INFRA_CHECK"])
    return path if path.is_absolute() else ROOT / path


@pytest.fixture(scope="module")
def sam_cfn() -> Template:
    """template.yaml after the SAM transform, as CloudFormation will see it."""
    result = subprocess.run(
        [
            str(TOOLS / "python"),
            str(ROOT / "infra" / "scripts" / "sam_translate.py"),
            str(ROOT / "template.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    translated: Template = json.loads(result.stdout)
    return translated


@pytest.fixture(scope="module")
def osls_cfn(out: Path) -> Template:
    """serverless.yml as `osls package` compiled it."""
    packaged: Template = json.loads(
        (out / "serverless" / "cloudformation-template-update-stack.json").read_text(encoding="utf-8")
    )
    return packaged


MANAGED = "ManagedInstancesEnabled"


def _of_type(template: Template, kind: str, *, managed: bool = False) -> dict[str, Template]:
    """Resources of a kind: those of the default stack, or those of the Lambda Managed Instances
    variant (``managed``, the resources under its condition)."""
    return {
        name: r
        for name, r in template["Resources"].items()
        if r["Type"] == kind and (r.get("Condition") == MANAGED) == managed
    }


def _one(template: Template, kind: str, *, managed: bool = False) -> Template:
    (resource,) = _of_type(template, kind, managed=managed).values()
    return resource


def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOLS / "cfn-lint"), "--", str(path)], capture_output=True, text=True)


def test_cfn_lint_accepts_the_template() -> None:
    result = _cfn_lint(ROOT / "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("good", "bad", "rule"),
    [
        ("Runtime: python3.12", "Runtime: python3.99", "E3030"),
        ("InvokeMode: RESPONSE_STREAM", "InvokeMode: STREAMY", "E3030"),
        ("PointInTimeRecoverySpecification:", "PointInTimeRecoverySpec:", "E3002"),
    ],
)
def test_cfn_lint_rejects_a_broken_copy(tmp_path: Path, good: str, bad: str, rule: str) -> None:
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    assert good in text
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace(good, bad, 1), encoding="utf-8")
    result = _cfn_lint(broken)
    assert result.returncode != 0
    assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("stack", ["sam", "osls"])
def test_the_function_url_streams(stack: str, sam_cfn: Template, osls_cfn: Template) -> None:
    template = sam_cfn if stack == "sam" else osls_cfn
    url = _one(template, "AWS::Lambda::Url")["Properties"]
    assert url["InvokeMode"] == "RESPONSE_STREAM"
    assert url["AuthType"] == "NONE"
    permissions = [p["Properties"] for p in _of_type(template, "AWS::Lambda::Permission").values()]
    public = {
        (p["Action"], p.get("FunctionUrlAuthType"), p.get("InvokedViaFunctionUrl")) for p in permissions
    }
    assert ("lambda:InvokeFunctionUrl", "NONE", None) in public
    assert ("lambda:InvokeFunction", None, True) in public


@pytest.mark.parametrize("stack", ["sam", "osls"])
def test_the_function_runs_with_both_layers_under_the_exec_wrapper(
    stack: str, sam_cfn: Template, osls_cfn: Template
) -> None:
    template = sam_cfn if stack == "sam" else osls_cfn
    function = _one(template, "AWS::Lambda::Function")["Properties"]
    layers = _of_type(template, "AWS::Lambda::LayerVersion")
    runtime_layer, dependencies_layer = (ref["Ref"] for ref in function["Layers"])
    assert runtime_layer.startswith("StreamingRuntime")
    assert dependencies_layer.startswith("Dependencies")
    # osls cannot make a layer conditional: the Managed Instances variant's Python 3.13 layer is always there.
    unused = {"sam": set(), "osls": {"DependenciesPy313LambdaLayer"}}[stack]
    assert layers.keys() - {runtime_layer, dependencies_layer} == unused
    assert function["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert function["Handler"] == "agentstream.handlers.stream.handler"
    assert function["Architectures"] == ["arm64"]
    for name in (runtime_layer, dependencies_layer):
        layer = layers[name]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
        assert function["Runtime"] in layer["Properties"]["CompatibleRuntimes"]
    assert all(layer["Properties"]["CompatibleArchitectures"] == ["arm64"] for layer in layers.values())


def _rest_integrations(template: Template, stack: str) -> list[Template]:
    """The Lambda integrations of the REST API, in CloudFormation's spelling."""
    if stack == "osls":
        methods = _of_type(template, "AWS::ApiGateway::Method").values()
        return [m["Properties"]["Integration"] for m in methods]
    body = _one(template, "AWS::ApiGateway::RestApi")["Properties"]["Body"]
    integrations = []
    for operations in body["paths"].values():
        for operation in operations.values():
            spec = operation["x-amazon-apigateway-integration"]
            integrations.append(
                {
                    "ResponseTransferMode": spec["responseTransferMode"],
                    "Uri": spec["uri"],
                    "TimeoutInMillis": spec["timeoutInMillis"],
                    "Type": spec["type"].upper(),
                }
            )
    return integrations


@pytest.mark.parametrize("stack", ["sam", "osls"])
def test_the_rest_api_streams(stack: str, sam_cfn: Template, osls_cfn: Template) -> None:
    template = sam_cfn if stack == "sam" else osls_cfn
    timeout = _one(template, "AWS::Lambda::Function")["Properties"]["Timeout"]
    integrations = _rest_integrations(template, stack)
    assert len(integrations) == 2  # / and /{proxy+}
    for integration in integrations:
        assert integration["Type"] == "AWS_PROXY"
        assert integration["ResponseTransferMode"] == "STREAM"
        assert integration["TimeoutInMillis"] == timeout * 1000
        uri = json.dumps(integration["Uri"])
        assert "2021-11-15/functions/" in uri
        assert "/response-streaming-invocations" in uri
    api = _one(template, "AWS::ApiGateway::RestApi")["Properties"]
    assert api["EndpointConfiguration"]["Types"] == ["REGIONAL"]


def test_both_stacks_grant_the_same_permissions(sam_cfn: Template, osls_cfn: Template) -> None:
    sam_role, osls_role = (_one(t, "AWS::IAM::Role")["Properties"] for t in (sam_cfn, osls_cfn))

    def normalized(role: Template) -> str:
        text = json.dumps(role["Policies"], sort_keys=True)
        return text.replace("StreamFunctionLogGroup", "LOG_GROUP").replace("StreamLogGroup", "LOG_GROUP")

    assert normalized(sam_role) == normalized(osls_role)
    sam_function, osls_function = (
        _one(t, "AWS::Lambda::Function")["Properties"] for t in (sam_cfn, osls_cfn)
    )
    for key in ("Runtime", "MemorySize", "Timeout", "Environment"):
        assert sam_function[key] == osls_function[key], key


def _files(paths: list[str]) -> set[str]:
    return {p for p in paths if "__pycache__" not in p and not p.endswith("/")}


def _tree(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("sam_dir", "zip_name"),
    [("StreamFunction", "function.zip"), ("StreamingRuntimeLayer", "layer-streaming-runtime.zip")],
)
def test_sam_build_and_make_build_ship_the_same_files(out: Path, sam_dir: str, zip_name: str) -> None:
    with zipfile.ZipFile(ROOT / "build" / zip_name) as archive:
        zipped = _files(archive.namelist())
    assert _files(_tree(out / "sam-build" / sam_dir)) == zipped


@pytest.mark.parametrize(
    ("sam_dir", "zip_name"),
    [
        ("DependenciesLayer", "layer-dependencies.zip"),
        # Lambda Managed Instances run Python 3.13: its wheels (pydantic-core's among them) differ.
        ("DependenciesLayerManaged", "layer-dependencies-py313.zip"),
    ],
)
def test_sam_build_and_make_build_ship_the_same_dependencies(out: Path, sam_dir: str, zip_name: str) -> None:
    def distributions(paths: set[str]) -> set[str]:
        return {p.split("/")[1] for p in paths if p.count("/") >= 2 and ".dist-info/" in p}

    with zipfile.ZipFile(ROOT / "build" / zip_name) as archive:
        zipped = distributions(_files(archive.namelist()))
    built = distributions(_files(_tree(out / "sam-build" / sam_dir)))
    assert zipped
    assert built == zipped


def test_osls_deploys_the_zips_of_make_build(osls_cfn: Template) -> None:
    function = _one(osls_cfn, "AWS::Lambda::Function")["Properties"]
    assert function["Code"]["S3Key"].endswith("/function.zip")
    layers = {
        name: r["Properties"]["Content"]["S3Key"]
        for name, r in _of_type(osls_cfn, "AWS::Lambda::LayerVersion").items()
    }
    assert layers["StreamingRuntimeLambdaLayer"].endswith("/layer-streaming-runtime.zip")
    assert layers["DependenciesLambdaLayer"].endswith("/layer-dependencies.zip")
    assert layers["DependenciesPy313LambdaLayer"].endswith("/layer-dependencies-py313.zip")


def test_the_managed_instances_variant_runs_one_published_version_on_a_capacity_provider(
    sam_cfn: Template,
) -> None:
    provider = _one(sam_cfn, "AWS::Lambda::CapacityProvider", managed=True)["Properties"]
    assert provider["InstanceRequirements"] == {"Architectures": ["arm64"]}
    assert provider["VpcConfig"] == {
        "SubnetIds": {"Ref": "ManagedInstancesSubnetIds"},
        "SecurityGroupIds": {"Ref": "ManagedInstancesSecurityGroupIds"},
    }
    function = _one(sam_cfn, "AWS::Lambda::Function", managed=True)["Properties"]
    assert function["Runtime"] == "python3.13"
    config = function["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
    assert config["CapacityProviderArn"] == {"Fn::GetAtt": ["CapacityProvider", "Arn"]}
    assert config["PerExecutionEnvironmentMaxConcurrency"] == {"Ref": "ManagedInstancesMaxConcurrency"}
    runtime_layer, dependencies_layer = (ref["Ref"] for ref in function["Layers"])
    assert runtime_layer in _of_type(sam_cfn, "AWS::Lambda::LayerVersion")
    layer = _of_type(sam_cfn, "AWS::Lambda::LayerVersion", managed=True)[dependencies_layer]
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    # The URL and its permissions point at the published alias, which is what runs on the instances.
    (alias_name,) = _of_type(sam_cfn, "AWS::Lambda::Alias", managed=True)
    url = _one(sam_cfn, "AWS::Lambda::Url", managed=True)["Properties"]
    assert (url["InvokeMode"], url["TargetFunctionArn"]) == ("RESPONSE_STREAM", {"Ref": alias_name})
    permissions = _of_type(sam_cfn, "AWS::Lambda::Permission", managed=True).values()
    assert {p["Properties"]["FunctionName"]["Ref"] for p in permissions} == {alias_name}


def test_osls_makes_the_same_managed_instances_variant(osls_cfn: Template) -> None:
    resources = osls_cfn["Resources"]
    function = _one(osls_cfn, "AWS::Lambda::Function", managed=True)["Properties"]
    assert function["Runtime"] == "python3.13"
    assert function["Code"]["S3Key"].endswith("/function.zip")
    config = function["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
    assert config == {
        "CapacityProviderArn": {"Fn::GetAtt": ["CapacityProvider", "Arn"]},
        "PerExecutionEnvironmentMaxConcurrency": {"Ref": "ManagedInstancesMaxConcurrency"},
        "ExecutionEnvironmentMemoryGiBPerVCpu": {"Ref": "ManagedInstancesMemoryGiBPerVCpu"},
    }
    # Only published versions run on a capacity provider; an unqualified call runs $LATEST.PUBLISHED.
    assert function["PublishToLatestPublished"] is True
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "StreamLogGroup"}, "LogFormat": "JSON"}
    assert not _of_type(osls_cfn, "AWS::Logs::LogGroup", managed=True)
    runtime_layer, dependencies_layer = (ref["Ref"] for ref in function["Layers"])
    assert runtime_layer == "StreamingRuntimeLambdaLayer"
    layer = resources[dependencies_layer]["Properties"]
    assert layer["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Content"]["S3Key"].endswith("/layer-dependencies-py313.zip")
    (function_name,) = _of_type(osls_cfn, "AWS::Lambda::Function", managed=True)
    url = _one(osls_cfn, "AWS::Lambda::Url", managed=True)["Properties"]
    assert (url["InvokeMode"], url["TargetFunctionArn"]) == (
        "RESPONSE_STREAM",
        {"Fn::GetAtt": [function_name, "Arn"]},
    )
    permissions = _of_type(osls_cfn, "AWS::Lambda::Permission", managed=True).values()
    assert len(permissions) == 2
    assert all(p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_name, "Arn"]} for p in permissions)
    provider = _one(osls_cfn, "AWS::Lambda::CapacityProvider", managed=True)["Properties"]
    assert provider["InstanceRequirements"] == {"Architectures": ["arm64"]}
    assert osls_cfn["Outputs"]["ManagedInstancesFunctionUrl"]["Condition"] == MANAGED


@pytest.mark.parametrize("stack", ["sam", "osls"])
def test_every_function_logs_json(stack: str, sam_cfn: Template, osls_cfn: Template) -> None:
    template = sam_cfn if stack == "sam" else osls_cfn
    functions = {
        **_of_type(template, "AWS::Lambda::Function"),
        **_of_type(template, "AWS::Lambda::Function", managed=True),
    }
    assert len(functions) == 2
    for name, function in functions.items():
        assert function["Properties"]["LoggingConfig"]["LogFormat"] == "JSON", name
