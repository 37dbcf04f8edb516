"""The agent fronts (OpenAI Responses, Anthropic Messages) over real sockets: the official SDKs against a
running proxy over the stub and the fake backends of both dialects. Fixtures are in tests/conftest.py."""
