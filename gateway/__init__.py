"""qroute gateway: an OpenAI-compatible endpoint that routes each request by complexity."""
