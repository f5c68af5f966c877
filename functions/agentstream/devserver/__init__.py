"""`make run`: the whole service on a laptop (DynamoDB, a local model, the app), for development only.

Nothing here is imported by the app or the Lambda handlers. It uses the standard library and httpx,
starts every service as a child process in its own process group, and stops them all on Ctrl-C.
Run it with ``python -m agentstream.devserver`` (options through the environment; see ``run.Options``).
"""
