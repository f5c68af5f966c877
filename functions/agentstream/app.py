"""The ASGI app, ``agentstream.app:app``: served by uvicorn locally and by the Lambda handlers in AWS."""

from agentstream.web.app import create_app

app = create_app()
