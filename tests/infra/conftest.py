"""Helpers for the deployment tests: template loading and the `infra_tools` split.

Tests marked ``infra_tools`` need the deploy tooling (.venv-tools, node_modules) and what
`make infra-check` builds with it; that target runs them with AGENTSTREAM_INFRA_CHECK set to its
output folder. Elsewhere (`make test`) they are deselected, not skipped: they are not part of that run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA_CHECK_ENV = "AGENTSTREAM_INFRA_CHECK"


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !GetAtt, !Sub ...) as their long JSON form."""


def _construct_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)
    return data


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(INFRA_CHECK_ENV):
        return
    deselected = [item for item in items if item.get_closest_marker("infra_tools")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("infra_tools")]


@pytest.fixture(scope="session")
def sam_template() -> dict[str, Any]:
    return load_yaml(ROOT / "template.yaml")


@pytest.fixture(scope="session")
def serverless_config() -> dict[str, Any]:
    return load_yaml(ROOT / "serverless.yml")
