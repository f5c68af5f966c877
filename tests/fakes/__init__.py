"""Fakes of the services agentstream talks to, for tests."""
