"""The three routes, defined once. Everything that names a route uses these."""

from __future__ import annotations

from typing import Final, Literal, get_args

Route = Literal["local", "local-think", "cloud"]
ROUTES: Final[tuple[Route, ...]] = get_args(Route)
LOCAL: Final[Route] = "local"
LOCAL_THINK: Final[Route] = "local-think"
CLOUD: Final[Route] = "cloud"
