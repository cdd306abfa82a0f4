"""Timestamp repair: the aligner's times made monotonic exactly as the official `fix_timestamp`.

    fixed = repair_timestamps(classes * 80.0)           # ms, two per word (start, end)
    words_with_times(words, classes * 80.0)             # [(word, start_s, end_s)], 3 decimals

The longest non-decreasing subsequence of the times is kept as they are; every other time is an
anomaly. A run of at most two anomalies takes the value of the nearer kept neighbour (the left one on a
tie); a longer run is interpolated linearly between its kept neighbours; a run at either end copies
its one neighbour. Results are truncated to int, as the official code does.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np

SHORT_RUN = 2  # anomaly runs up to this long snap to a neighbour; longer ones are interpolated


def _as_list(values) -> list:
    # Python numbers, as the official `data.tolist()` gives them: the float arithmetic below then
    # matches it bit for bit.
    if isinstance(values, np.ndarray):
        return values.reshape(-1).tolist()
    return list(values)


def _kept_indices(data: list) -> list[int]:
    """The subsequence the official O(n^2) dp picks, in O(n log n).

    The official dp: length[i] = 1 + the longest length[j] over j < i with data[j] <= data[i], parent[i]
    = the first such j (strict `>` update over ascending j); the chain is read back from the first i of
    the greatest length. The lengths are those of patience sorting. Among the indices of one length,
    values strictly decrease with the index (if j1 < j2 had data[j1] <= data[j2], length[j2] would be
    greater), so the j < i of length[i] - 1 with data[j] <= data[i] are a tail of that level's list and
    the first of them, the official parent, is found by bisection.
    """
    n = len(data)
    tails: list = []  # tails[L]: the smallest last value of a non-decreasing run of length L + 1 so far
    levels: list[list[int]] = []  # indices of each length - 1, ascending (values descending)
    negated: list[list] = []  # -values of each level, ascending, for bisection
    parent = [-1] * n
    best_len, best_end = 0, -1
    for i, value in enumerate(data):
        level = bisect_right(tails, value)
        if level == len(tails):
            tails.append(value)
            levels.append([])
            negated.append([])
        else:
            tails[level] = value
        if level:
            pos = bisect_left(negated[level - 1], -value)  # the first of that level with a value <= value
            parent[i] = levels[level - 1][pos]
        levels[level].append(i)
        negated[level].append(-value)
        if level + 1 > best_len:
            best_len, best_end = level + 1, i
    chain = []
    idx = best_end
    while idx != -1:
        chain.append(idx)
        idx = parent[idx]
    chain.reverse()
    return chain


def repair_timestamps(values) -> list[int]:
    """Monotonic times (ints) from raw ones (a list or numpy array, e.g. ms), as official fix_timestamp."""
    data = _as_list(values)
    n = len(data)
    if n == 0:
        return []
    normal = [False] * n
    for idx in _kept_indices(data):
        normal[idx] = True
    result = list(data)
    i = 0
    while i < n:
        if normal[i]:
            i += 1
            continue
        j = i
        while j < n and not normal[j]:
            j += 1
        # Kept values never change, so the nearest kept neighbours are read from data.
        left = data[i - 1] if i > 0 else None
        right = data[j] if j < n else None
        count = j - i
        for k in range(i, j):
            if left is None:
                result[k] = right
            elif right is None:
                result[k] = left
            elif count <= SHORT_RUN:
                result[k] = left if k - (i - 1) <= j - k else right
            else:
                result[k] = left + (right - left) / (count + 1) * (k - i + 1)
        i = j
    return [int(v) for v in result]


def words_with_times(words: list[str], values_ms) -> list[tuple[str, float, float]]:
    """(word, start_s, end_s) from two raw times (ms) per word: repaired, then round(ms / 1000, 3)."""
    fixed = repair_timestamps(values_ms)
    if len(fixed) != 2 * len(words):
        raise ValueError(f"{len(words)} words need {2 * len(words)} times, got {len(fixed)}")
    return [
        (word, round(fixed[2 * i] / 1000.0, 3), round(fixed[2 * i + 1] / 1000.0, 3))
        for i, word in enumerate(words)
    ]
