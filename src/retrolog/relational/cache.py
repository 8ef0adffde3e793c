"""Where the dataframe cache used to live: it is ``store/columnar.py`` now (derived data is
persistence too). Kept for callers that import ``drop_cache`` from here."""

from ..store.columnar import FrameCache, cache_path, drop_cache

__all__ = ["FrameCache", "cache_path", "drop_cache"]
