"""Server-side downsampling of long series, so charts stay fast whatever the history length.

Two methods, both keep the first and last point of a series and return indices into it (sorted),
so x, y and any per-point flags can be sliced together:

* ``minmax`` (default): split the series into buckets of equal point count and keep each bucket's
  lowest and highest point. Spikes and dips survive; vectorised with numpy, so it stays cheap for
  thousands of series at once (``minmax_many``).
* ``lttb``: Largest-Triangle-Three-Buckets (Steinarsson, 2013), the visually best single-line
  method; one numpy step per bucket, used for a few series at a time.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

METHODS = ("minmax", "lttb")


def minmax(y: FloatArray, max_points: int) -> IntArray:
    """Indices of at most ``max_points`` points of ``y`` keeping each bucket's min and max."""
    starts = np.zeros(1, dtype=np.int64)
    return minmax_many(y, starts, max_points)


def minmax_many(y: FloatArray, starts: IntArray, max_points: int) -> IntArray:
    """Min/max downsampling of many series stored back to back in ``y``.

    ``starts`` holds the offset of each series in ``y`` (sorted, first 0). Returns the kept indices
    into ``y`` in increasing order; series with at most ``max_points`` points are kept whole.
    """
    n = len(y)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    max_points = max(int(max_points), 4)
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.append(starts[1:], n)
    lengths = ends - starts
    series_of = np.repeat(np.arange(len(starts)), lengths)
    pos = np.arange(n, dtype=np.int64) - starts[series_of]
    length = lengths[series_of]
    keep = length <= max_points  # short series: keep every point
    long_idx = np.nonzero(~keep)[0]
    if len(long_idx):
        buckets = max(max_points // 2 - 1, 1)
        bucket = (pos[long_idx] * buckets) // length[long_idx]
        key = series_of[long_idx].astype(np.int64) * (buckets + 1) + bucket
        vals = y[long_idx]
        heads = np.ones(len(key), dtype=bool)  # points of one bucket are contiguous
        heads[1:] = key[1:] != key[:-1]
        bounds = np.nonzero(heads)[0]
        bucket_of = np.cumsum(heads) - 1
        finite = np.isfinite(vals)
        lows = np.minimum.reduceat(np.where(finite, vals, np.inf), bounds)
        highs = np.maximum.reduceat(np.where(finite, vals, -np.inf), bounds)
        at = np.arange(len(vals))
        big = len(vals)
        first_low = np.minimum.reduceat(np.where(vals == lows[bucket_of], at, big), bounds)
        first_high = np.minimum.reduceat(np.where(vals == highs[bucket_of], at, big), bounds)
        empty = bounds[~np.isfinite(lows)]  # an all-NaN bucket keeps one point: a gap
        for picked in (first_low, first_high, empty):
            keep[long_idx[picked[picked < big]]] = True
        has = lengths > 0
        keep[starts[has]] = True  # a series' first and last point always stay
        keep[ends[has] - 1] = True
    return np.nonzero(keep)[0].astype(np.int64)


def lttb(x: FloatArray, y: FloatArray, max_points: int) -> IntArray:
    """Indices of ``max_points`` points chosen by Largest-Triangle-Three-Buckets."""
    n = len(y)
    if max_points >= n or n <= 3:
        return np.arange(n, dtype=np.int64)
    max_points = max(int(max_points), 3)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    y = np.where(np.isfinite(y), y, np.nan)
    edges = np.linspace(1, n - 1, max_points - 1).astype(np.int64)
    out = np.empty(max_points, dtype=np.int64)
    out[0] = 0
    out[-1] = n - 1
    prev = 0
    for i in range(max_points - 2):
        lo, hi = edges[i], max(edges[i + 1], edges[i] + 1)
        nxt_lo, nxt_hi = edges[i + 1], (edges[i + 2] if i + 2 < len(edges) else n)
        nxt_hi = max(nxt_hi, nxt_lo + 1)
        avg_x = float(np.mean(x[nxt_lo:nxt_hi]))
        ny = y[nxt_lo:nxt_hi]
        avg_y = float(np.nanmean(ny)) if np.isfinite(ny).any() else float(y[prev])
        px, py = x[prev], y[prev]
        cx, cy = x[lo:hi], y[lo:hi]
        area = np.abs((px - avg_x) * (cy - py) - (px - cx) * (avg_y - py))
        area = np.where(np.isnan(area), -1.0, area)
        prev = lo + int(np.argmax(area))
        out[i + 1] = prev
    return np.unique(out)
