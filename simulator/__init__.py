"""Simulated vLLM and DashScope upstreams: a test fixture and benchmark upstream, never the product."""
