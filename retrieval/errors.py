"""Retrieval's errors, translated from foreign ones (httpx, file system, JSON) where they enter.

    RetrievalError
    ├── IndexNotFound        no index at the path (never built, or the wrong folder)
    ├── BadIndex             an index that cannot be read: manifest, format or settings
    └── BackendUnavailable   the embedding or rerank endpoint failed, timed out or answered an error
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class; the message says what failed and where."""


class IndexNotFound(RetrievalError):
    pass


class BadIndex(RetrievalError):
    pass


class BackendUnavailable(RetrievalError):
    pass
