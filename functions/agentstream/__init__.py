"""agentstream: AI agents on AWS Lambda that stream their replies token by token as Server-Sent Events."""

__version__ = "0.1.0"
