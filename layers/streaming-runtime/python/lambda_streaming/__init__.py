"""A Lambda Runtime API client for Python with response streaming (see the layer's README.md).

App-agnostic: it knows handlers, events and bytes, never a web framework.
"""

from .context import LambdaContext, current_invocation, trace_id
from .runtime import Runtime, load_handler, main

__all__ = ["LambdaContext", "Runtime", "current_invocation", "load_handler", "main", "trace_id"]
__version__ = "0.1.0"
