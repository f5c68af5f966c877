"""The core: agents, events, providers, tools. Knows nothing of HTTP or Lambda."""
