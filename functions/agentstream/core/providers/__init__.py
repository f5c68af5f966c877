"""Model providers, each in its own module, imported only when an agent uses it (cold start).

A provider module defines ``async def create(settings) -> ModelProvider``, the provider as the
environment configures it; one that can serve named endpoints (``AGENTSTREAM_ENDPOINTS``) also takes
``create(settings, endpoint)``, an ``EndpointAccess`` (the endpoint's URL and key, resolved here).
Adding a provider is one module, one line in ``_MODULES`` and its options in ``_options.OPTIONS``.
Every provider comes wrapped in ``Retrying``: a call that fails before it streamed anything is tried
again.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Protocol

from agentstream.core.providers._retry import Retrying, RetryPolicy
from agentstream.core.providers.base import EndpointAccess
from agentstream.errors import BadRequest

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.core.providers.base import ModelProvider

__all__ = ["ENDPOINT_PROVIDERS", "PROVIDER_NAMES", "ModelChoice", "create_provider"]

# provider name -> module defining ``create(settings[, endpoint]) -> ModelProvider``
_MODULES = {
    "anthropic": "agentstream.core.providers.anthropic",
    "bedrock": "agentstream.core.providers.bedrock",
    "openai": "agentstream.core.providers.openai",
    "scripted": "agentstream.core.providers.scripted",
}
PROVIDER_NAMES = frozenset(_MODULES)

# httpx logs every request's URL at INFO, httpcore every connection's host and port at DEBUG: an
# upstream's address (and credentials in its URL) never reaches the logs. Their warnings still do.
for _transport in ("httpx", "httpcore"):
    logging.getLogger(_transport).setLevel(logging.WARNING)
# the wire formats a named endpoint may speak
ENDPOINT_PROVIDERS = frozenset({"openai", "anthropic"})


class ModelChoice(Protocol):
    """What picks a provider: an agent's ``model`` (``core.agents.ModelConfig``)."""

    @property
    def provider(self) -> str: ...

    @property
    def endpoint(self) -> str | None: ...


async def create_provider(model: ModelChoice | str, settings: Settings) -> ModelProvider:
    """The provider for an agent's ``model`` (or a provider name: its environment configuration).

    May read a key from Secrets Manager (cached). An endpoint the configuration no longer has is a
    ``BadRequest``: the agent names something the operator removed.
    """
    name, endpoint = (model, None) if isinstance(model, str) else (model.provider, model.endpoint)
    module = importlib.import_module(_MODULES[name])
    if endpoint is None:
        provider: ModelProvider = await module.create(settings)
    else:
        provider = await module.create(settings, await _access(endpoint, name, settings))
    return Retrying(provider, RetryPolicy(attempts=settings.upstream_retries + 1))


async def _access(name: str, provider: str, settings: Settings) -> EndpointAccess:
    endpoint = settings.endpoints.get(name)
    if endpoint is None:
        raise BadRequest(f"the agent's model endpoint {name!r} is not configured (AGENTSTREAM_ENDPOINTS)")
    if endpoint.provider != provider:
        raise BadRequest(f"endpoint {name!r} speaks {endpoint.provider}, not {provider}")
    api_key = settings.endpoint_key(name)
    if endpoint.api_key_secret_arn is not None:
        from agentstream.secrets import get_secret

        api_key = await get_secret(endpoint.api_key_secret_arn)
    return EndpointAccess(name=name, base_url=endpoint.base_url, api_key=api_key)
