"""template.yaml and serverless.yml describe one stack: same function, table, secrets and IAM.

Read as YAML (no tooling needed); tests/infra/test_tooling.py checks what the tools make of them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agentstream.store import schema

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
Template = dict[str, Any]


def _sam_function(sam: Template) -> Template:
    props: Template = {**sam["Globals"]["Function"], **sam["Resources"]["StreamFunction"]["Properties"]}
    return props


def _sls_function(sls: Template) -> Template:
    fn: Template = {**sls["provider"], **sls["functions"]["stream"]}
    return fn


def _sam_resources(sam: Template) -> Template:
    resources: Template = sam["Resources"]
    return resources


def _sls_resources(sls: Template) -> Template:
    resources: Template = sls["resources"]["Resources"]
    return resources


def _statements(role: Template) -> list[Template]:
    return [s for policy in role["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def _flat_statements(role: Template) -> Iterator[Template]:
    """Every statement of a role, including the branches of conditional (Fn::If) ones."""
    for statement in _statements(role):
        if "Fn::If" in statement:
            yield from (s for s in statement["Fn::If"][1:] if "Effect" in s)
        else:
            yield statement


def _actions(statement: Template) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


@pytest.fixture(params=["template.yaml", "serverless.yml"])
def resources(
    request: pytest.FixtureRequest, sam_template: Template, serverless_config: Template
) -> Template:
    if request.param == "template.yaml":
        return _sam_resources(sam_template)
    return _sls_resources(serverless_config)


def test_table_is_the_one_agentstream_init_table_creates(resources: Template) -> None:
    table = resources["Table"]["Properties"]
    expected = schema.create_table_request("ignored")
    assert table["KeySchema"] == expected["KeySchema"]
    assert table["AttributeDefinitions"] == expected["AttributeDefinitions"]
    assert table["BillingMode"] == expected["BillingMode"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": schema.TTL_ATTRIBUTE, "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert "GlobalSecondaryIndexes" not in table
    assert "LocalSecondaryIndexes" not in table
    assert resources["Table"]["DeletionPolicy"] == "Retain"


def test_iam_grants_named_actions_only(resources: Template) -> None:
    statements = list(_flat_statements(resources["StreamFunctionRole"]))
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in _actions(statement):
            assert "*" not in action, statement


def test_iam_reaches_only_the_stacks_own_table_and_secrets(resources: Template) -> None:
    by_sid = {s["Sid"]: s for s in _flat_statements(resources["StreamFunctionRole"])}
    assert by_sid["Table"]["Resource"] == {"Fn::GetAtt": ["Table", "Arn"]}
    assert by_sid["Secrets"]["Action"] == "secretsmanager:GetSecretValue"
    assert by_sid["Secrets"]["Resource"] == [
        {"Fn::If": ["CreateAdminKeySecret", {"Ref": "AdminKeySecret"}, {"Ref": "AdminKeySecretArn"}]},
        {
            "Fn::If": [
                "CreateOpenAIApiKeySecret",
                {"Ref": "OpenAIApiKeySecret"},
                {"Ref": "OpenAIApiKeySecretArn"},
            ]
        },
        {"Fn::If": ["HasAnthropicApiKey", {"Ref": "AnthropicApiKeySecretArn"}, {"Ref": "AWS::NoValue"}]},
    ]
    assert by_sid["EndpointSecrets"]["Action"] == "secretsmanager:GetSecretValue"
    assert by_sid["EndpointSecrets"]["Resource"] == {"Ref": "EndpointKeySecretArns"}


def test_bedrock_is_granted_on_the_listed_models_only(resources: Template) -> None:
    by_sid = {s["Sid"]: s for s in _flat_statements(resources["StreamFunctionRole"])}
    assert _actions(by_sid["Bedrock"]) == ["bedrock:InvokeModelWithResponseStream"]
    assert by_sid["Bedrock"]["Resource"] == {"Ref": "BedrockModelArns"}  # never a wildcard


def test_bedrock_endpoint_and_mcp_secrets_are_granted_only_when_given(
    resources: Template, sam_template: Template
) -> None:
    conditional = [s for s in _statements(resources["StreamFunctionRole"]) if "Fn::If" in s]
    assert [s["Fn::If"][0] for s in conditional] == [
        "HasEndpointKeySecrets",
        "HasMcpHeaderSecrets",
        "BedrockEnabled",
    ]
    assert all(s["Fn::If"][2] == {"Ref": "AWS::NoValue"} for s in conditional)
    # an empty list (the default) grants nothing
    conditions = sam_template["Conditions"]
    for condition, parameter in (
        ("BedrockEnabled", "BedrockModelArns"),
        ("HasEndpointKeySecrets", "EndpointKeySecretArns"),
        ("HasMcpHeaderSecrets", "McpHeaderSecretArns"),
    ):
        assert conditions[condition] == {
            "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": parameter}]}, ""]}]
        }
        assert sam_template["Parameters"][parameter] == {
            **sam_template["Parameters"][parameter],
            "Type": "CommaDelimitedList",
            "Default": "",
        }
    mcp = conditional[1]["Fn::If"][1]
    assert (mcp["Action"], mcp["Resource"]) == (
        "secretsmanager:GetSecretValue",
        {"Ref": "McpHeaderSecretArns"},  # the secrets the operator names, nothing wider
    )


def test_secrets_are_generated_never_written_in_the_template(resources: Template) -> None:
    for name in ("AdminKeySecret", "OpenAIApiKeySecret"):
        props = resources[name]["Properties"]
        assert "SecretString" not in props
        assert props["GenerateSecretString"]["PasswordLength"] >= 32


def test_both_templates_describe_the_same_function(
    sam_template: Template, serverless_config: Template
) -> None:
    sam, sls = _sam_function(sam_template), _sls_function(serverless_config)
    assert sam["Handler"] == sls["handler"] == "agentstream.handlers.stream.handler"
    assert sam["Runtime"] == sls["runtime"] == "python3.12"
    assert sam["Architectures"] == [sls["architecture"]] == ["arm64"]
    assert sam["MemorySize"] == sls["memorySize"]
    assert sam["Timeout"] == sls["timeout"]
    assert sam["Environment"]["Variables"] == sls["environment"]
    # every line JSON in Lambda: the platform's too (the app's and the runtime's are already)
    assert sam["LoggingConfig"]["LogFormat"] == sls["logs"]["lambda"]["logFormat"] == "JSON"


def test_the_function_runs_under_the_streaming_runtime_layer(
    sam_template: Template, serverless_config: Template
) -> None:
    sam, sls = _sam_function(sam_template), _sls_function(serverless_config)
    assert sam["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert sam["Layers"] == [{"Ref": "StreamingRuntimeLayer"}, {"Ref": "DependenciesLayer"}]
    layers = _sam_resources(sam_template)
    assert layers["StreamingRuntimeLayer"]["Properties"]["ContentUri"] == "layers/streaming-runtime/"
    assert layers["DependenciesLayer"]["Properties"]["ContentUri"] == "layers/dependencies/"
    assert sls["layers"] == [{"Ref": "StreamingRuntimeLambdaLayer"}, {"Ref": "DependenciesLambdaLayer"}]
    sls_layers = serverless_config["layers"]
    assert sls_layers["streamingRuntime"]["package"]["artifact"] == "build/layer-streaming-runtime.zip"
    assert sls_layers["dependencies"]["package"]["artifact"] == "build/layer-dependencies.zip"
    assert sls["package"]["artifact"] == "build/function.zip"


def test_keys_reach_the_function_as_secret_arns_only(sam_template: Template) -> None:
    env = _sam_function(sam_template)["Environment"]["Variables"]
    assert not {"AGENTSTREAM_ADMIN_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"} & env.keys()
    assert {
        "AGENTSTREAM_ADMIN_KEY_SECRET_ARN",
        "OPENAI_API_KEY_SECRET_ARN",
        "ANTHROPIC_API_KEY_SECRET_ARN",
        "AGENTSTREAM_ENDPOINTS",
    } <= env.keys()
    assert env["AGENTSTREAM_TABLE"] == {"Ref": "Table"}


def test_both_templates_stream_through_the_function_url(
    sam_template: Template, serverless_config: Template
) -> None:
    sam_url = _sam_function(sam_template)["FunctionUrlConfig"]
    sls_url = _sls_function(serverless_config)["url"]
    assert sam_url["InvokeMode"] == sls_url["invokeMode"] == "RESPONSE_STREAM"
    assert sam_url["AuthType"] == "NONE"
    sam_cors, sls_cors = sam_url["Cors"], sls_url["cors"]
    assert sam_cors["AllowMethods"] == sls_cors["allowedMethods"]
    assert sam_cors["AllowHeaders"] == sls_cors["allowedHeaders"]
    assert sam_cors["ExposeHeaders"] == sls_cors["exposedResponseHeaders"] == ["x-run-id"]
    assert sam_cors["MaxAge"] == sls_cors["maxAge"]


def test_both_templates_stream_through_a_regional_rest_api(
    sam_template: Template, serverless_config: Template
) -> None:
    sam, sls = _sam_function(sam_template), _sls_function(serverless_config)
    integration_timeout = sam["Timeout"] * 1000
    sam_routes = set()
    for event in sam["Events"].values():
        props = event["Properties"]
        assert event["Type"] == "Api"
        assert props["ResponseTransferMode"] == "RESPONSE_STREAM"
        assert props["TimeoutInMillis"] == integration_timeout
        sam_routes.add((props["Path"], props["Method"].upper()))
    sls_routes = set()
    for event in sls["events"]:
        http = event["http"]
        assert http["response"] == {"transferMode": "STREAM"}
        assert http["timeoutInMillis"] == integration_timeout
        sls_routes.add((http["path"], http["method"].upper()))
    assert sam_routes == sls_routes == {("/", "ANY"), ("/{proxy+}", "ANY")}
    api = _sam_resources(sam_template)["RestApi"]["Properties"]
    assert api["EndpointConfiguration"] == {"Type": "REGIONAL"}
    assert serverless_config["provider"]["endpointType"] == "REGIONAL"


def test_both_templates_share_conditions_parameters_and_logs(
    sam_template: Template, serverless_config: Template
) -> None:
    assert sam_template["Conditions"] == serverless_config["resources"]["Conditions"]
    sam_params = sam_template["Parameters"]
    sls_defaults = serverless_config["params"]["default"]
    sls_params = serverless_config["resources"]["Parameters"]
    for name, param in sls_params.items():
        key = param["Default"].removeprefix("${param:").removesuffix("}")
        assert sls_defaults[key] == sam_params[name]["Default"], name
        assert {**param, "Default": None} == {
            k: v for k, v in {**sam_params[name], "Default": None}.items() if k != "Description"
        }, name
    assert sls_defaults["allowedOrigin"] == sam_params["AllowedOrigin"]["Default"]
    log_group = _sam_resources(sam_template)["StreamFunctionLogGroup"]["Properties"]
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    assert serverless_config["provider"]["logRetentionInDays"] == "${param:logRetentionInDays}"
    assert sls_defaults["logRetentionInDays"] == sam_params["LogRetentionInDays"]["Default"]


def test_both_roles_are_the_same_but_for_their_log_group(
    sam_template: Template, serverless_config: Template
) -> None:
    sam_role = _sam_resources(sam_template)["StreamFunctionRole"]
    sls_role = _sls_resources(serverless_config)["StreamFunctionRole"]
    sam_logs, sls_logs = (
        next(s for s in _statements(role) if s.get("Sid") == "Logs") for role in (sam_role, sls_role)
    )
    assert sam_logs["Resource"] == {"Fn::GetAtt": ["StreamFunctionLogGroup", "Arn"]}
    # osls makes the function's log group itself and names it after the function.
    assert sls_logs["Resource"] == {"Fn::GetAtt": ["StreamLogGroup", "Arn"]}
    assert {**sam_logs, "Resource": None} == {**sls_logs, "Resource": None}
    others = [[s for s in _statements(role) if s.get("Sid") != "Logs"] for role in (sam_role, sls_role)]
    assert others[0] == others[1]
    assert (
        sam_role["Properties"]["AssumeRolePolicyDocument"]
        == sls_role["Properties"]["AssumeRolePolicyDocument"]
    )


def test_outputs_give_what_a_deployer_needs(sam_template: Template, serverless_config: Template) -> None:
    outputs = sam_template["Outputs"]
    assert outputs["FunctionUrl"]["Value"] == {"Fn::GetAtt": ["StreamFunctionUrl", "FunctionUrl"]}
    assert {"RestApiUrl", "TableName", "AdminKeySecretArn", "OpenAIApiKeySecretArn"} <= outputs.keys()
    sls_outputs = serverless_config["resources"]["Outputs"]
    assert sls_outputs["FunctionUrl"]["Value"] == {"Fn::GetAtt": ["StreamLambdaFunctionUrl", "FunctionUrl"]}
    assert outputs.keys() == sls_outputs.keys()


def test_samconfig_environments_set_only_template_parameters(sam_template: Template) -> None:
    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text(encoding="utf-8"))
    assert {"default", "prod"} <= config.keys()
    stack_names = set()
    for env in ("default", "prod"):
        stack_names.add(config[env]["global"]["parameters"]["stack_name"])
        deploy = config[env]["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        for override in deploy["parameter_overrides"].split():
            name, _, value = override.partition("=")
            parameter = sam_template["Parameters"][name]
            assert str(value) in map(str, parameter.get("AllowedValues", [value])), override
    assert len(stack_names) == 2


def test_stages_have_the_same_settings_in_both_tools(serverless_config: Template) -> None:
    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text(encoding="utf-8"))
    for sam_env, stage in (("default", "dev"), ("prod", "prod")):
        overrides = dict(
            o.split("=", 1) for o in config[sam_env]["deploy"]["parameters"]["parameter_overrides"].split()
        )
        assert overrides["Stage"] == stage
        stage_params = {**serverless_config["params"]["default"], **serverless_config["params"][stage]}
        assert str(stage_params["logRetentionInDays"]) == overrides["LogRetentionInDays"]


def test_the_managed_instances_variant_is_off_by_default_and_complete(sam_template: Template) -> None:
    assert sam_template["Parameters"]["ManagedInstances"]["Default"] == "false"
    resources = _sam_resources(sam_template)
    managed = {name for name, r in resources.items() if r.get("Condition") == "ManagedInstancesEnabled"}
    assert managed == {"CapacityProvider", "StreamFunctionManaged", "DependenciesLayerManaged"}
    function = {**sam_template["Globals"]["Function"], **resources["StreamFunctionManaged"]["Properties"]}
    assert function["Runtime"] == "python3.13"  # the first Python that Lambda Managed Instances run
    assert function["CapacityProviderConfig"] == {
        "Arn": {"Fn::GetAtt": ["CapacityProvider", "Arn"]},
        "PerExecutionEnvironmentMaxConcurrency": {"Ref": "ManagedInstancesMaxConcurrency"},
        "ExecutionEnvironmentMemoryGiBPerVCpu": {"Ref": "ManagedInstancesMemoryGiBPerVCpu"},
    }
    assert function["AutoPublishAlias"]  # only published versions run on a capacity provider
    assert function["Layers"] == [{"Ref": "StreamingRuntimeLayer"}, {"Ref": "DependenciesLayerManaged"}]
    assert resources["DependenciesLayerManaged"]["Metadata"]["BuildMethod"] == "python3.13"
    assert "python3.13" in resources["StreamingRuntimeLayer"]["Properties"]["CompatibleRuntimes"]
    plain = _sam_function(sam_template)
    assert function["Environment"] == plain["Environment"]
    assert function["FunctionUrlConfig"] == plain["FunctionUrlConfig"]
    assert function["Role"] == plain["Role"]


def test_serverless_has_the_same_managed_instances_variant(
    sam_template: Template, serverless_config: Template
) -> None:
    assert serverless_config["params"]["default"]["managedInstances"] == "false"
    sam = {
        **sam_template["Globals"]["Function"],
        **_sam_resources(sam_template)["StreamFunctionManaged"]["Properties"],
    }
    managed = serverless_config["functions"]["streamManaged"]
    assert managed["condition"] == "ManagedInstancesEnabled"
    assert managed["handler"] == sam["Handler"]
    assert managed["runtime"] == sam["Runtime"] == "python3.13"
    assert managed["memorySize"] == sam["MemorySize"]
    assert managed["package"]["artifact"] == "build/function.zip"
    assert "environment" not in managed  # the provider's, as the plain function has
    assert managed["url"] == serverless_config["functions"]["stream"]["url"]
    assert "events" not in managed  # the REST API stays on the plain function, as in template.yaml
    assert managed["layers"] == [
        {"Ref": "StreamingRuntimeLambdaLayer"},
        {"Ref": "DependenciesPy313LambdaLayer"},
    ]
    layers = serverless_config["layers"]
    assert layers["dependenciesPy313"]["package"]["artifact"] == "build/layer-dependencies-py313.zip"
    assert layers["dependenciesPy313"]["compatibleRuntimes"] == ["python3.13"]
    assert "python3.13" in layers["streamingRuntime"]["compatibleRuntimes"]
    # What osls has no keys for: the capacity provider, the published version, the shared log group.
    extension = serverless_config["resources"]["extensions"]["StreamManagedLambdaFunction"]["Properties"]
    config = extension["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
    sam_config = sam["CapacityProviderConfig"]
    assert config == {
        "CapacityProviderArn": sam_config["Arn"],
        "PerExecutionEnvironmentMaxConcurrency": sam_config["PerExecutionEnvironmentMaxConcurrency"],
        "ExecutionEnvironmentMemoryGiBPerVCpu": sam_config["ExecutionEnvironmentMemoryGiBPerVCpu"],
    }
    assert extension["PublishToLatestPublished"] is True
    assert extension["LoggingConfig"] == {"LogGroup": {"Ref": "StreamLogGroup"}, "LogFormat": "JSON"}
    assert managed["disableLogs"] is True
    provider = _sls_resources(serverless_config)["CapacityProvider"]
    sam_provider = _sam_resources(sam_template)["CapacityProvider"]
    assert provider["Condition"] == sam_provider["Condition"]
    assert {k: v for k, v in provider["Properties"].items() if k != "PermissionsConfig"} == sam_provider[
        "Properties"
    ]
    role = _sls_resources(serverless_config)["CapacityProviderOperatorRole"]
    assert provider["Properties"]["PermissionsConfig"] == {
        "CapacityProviderOperatorRoleArn": {"Fn::GetAtt": ["CapacityProviderOperatorRole", "Arn"]}
    }
    assert role["Condition"] == "ManagedInstancesEnabled"
    assert role["Properties"]["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSLambdaManagedEC2ResourceOperator"}
    ]
    output = serverless_config["resources"]["Outputs"]["ManagedInstancesFunctionUrl"]
    assert output["Condition"] == "ManagedInstancesEnabled"
    assert output["Value"] == {"Fn::GetAtt": ["StreamManagedLambdaFunctionUrl", "FunctionUrl"]}
