"""The HTTP adapter: the FastAPI app over the core."""
