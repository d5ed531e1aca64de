"""Complexity router: score a request on [0, 1], then map the score to a route."""
