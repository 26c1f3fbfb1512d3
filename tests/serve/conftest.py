"""The endpoint tests use the tiny router of tests/agents."""

from tests.agents.conftest import tiny_router, tiny_router_parts  # noqa: F401
