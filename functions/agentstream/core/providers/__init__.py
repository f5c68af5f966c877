"""Model providers, each in its own module, imported only when an agent uses it (cold start)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.core.providers.base import ModelProvider

__all__ = ["PROVIDER_NAMES", "create_provider"]

# provider name -> module defining ``create(settings) -> ModelProvider``
_MODULES = {
    "openai": "agentstream.core.providers.openai",
    "scripted": "agentstream.core.providers.scripted",
}
PROVIDER_NAMES = frozenset(_MODULES)


async def create_provider(name: str, settings: Settings) -> ModelProvider:
    """The provider called ``name``, configured from ``settings`` (may read secrets once)."""
    module = importlib.import_module(_MODULES[name])
    provider: ModelProvider = await module.create(settings)
    return provider
