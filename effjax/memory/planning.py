"""Query planning: which rows of the memory store's index a search scores, and why.

A search is first restricted by time and speaker / session (the temporal index). If what
is left is small (at most `exhaustive_below` rows) every row of it is scored: below that
size one matrix-vector product is faster than routing. Otherwise it is routed: through the
tags it names, or down the tag DAG to the nearest fine topics (widened until enough episodes
are in reach), plus the episodes of the specific keyphrases the query names. Each route
that cannot serve falls back to a wider one and says why.

Speakers are not a route: the store embeds each episode with its speaker (see
`effjax.memory.embedtext`), and `speaker=` is an explicit filter.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Float, Int

from effjax.memory.index import Index
from effjax.memory.tags import candidates


@dataclasses.dataclass(frozen=True)
class Plan:
    """The candidates of a search and how they were chosen.

    Attributes:
      rows: (m,) int64 rows to score one by one.
      slices: (start, end) row ranges to score whole (consolidated fine topics, or every row).
      path: the index path, e.g. "temporal(40)+dag(coarse=8,fine=16,keyphrases=0)",
        "tags(x)", "exhaustive(600)" (a small store or restriction scored whole) or "flat".
      fallback: why a wider search was run than asked for; None otherwise.
      tags: the tags the candidates came from: fine topics ("fine:j") and keyphrases of a
        DAG route, or the known tags asked for.
    """

    rows: Int[np.ndarray, " m"]
    slices: list[tuple[int, int]]
    path: str
    fallback: str | None = None
    tags: tuple[str, ...] = ()


def plan(index: Index, query: str, q: Float[np.ndarray, " d"], k: int, *, mode: str,
         span: tuple[float | None, float | None] | None, tags: str | list[str] | None,
         speaker: str | None, session: str | None, nprobe: int, beam: int,
         min_candidates: int, max_tag_episodes: int, exhaustive_below: int) -> Plan:
    """Chooses the rows a search scores (call it under the store's lock).

    Args:
      index: the store's index.
      query: the query text (for the keyphrases it names).
      q: (d,) the query's embedding.
      k: hits wanted.
      mode: "swift" (routed) or "flat" (every row within the restriction).
      span: (start, end) times to restrict to (either may be None), or None.
      tags: tags to restrict to (unknown ones are dropped; none known: a fallback).
      speaker, session: restrict to one speaker's / session's timeline.
      nprobe, beam: fine topics probed, broad topics descended.
      min_candidates: fewest episodes in reach before the DAG route widens.
      max_tag_episodes: a keyphrase the query names adds its episodes when it tags at most
        this many.
      exhaustive_below: a swift search without tags scores every row when the store (or
        what the restriction leaves) has at most this many.

    Returns:
      The `Plan`.
    """
    restrict, notes = _restriction(index, span, speaker, session)
    if mode == "flat" or index.n == 0:  # every row as one slice: no gathered copy
        if restrict is None:
            return Plan(np.zeros(0, np.int64), [(0, index.n)], "+".join(notes + ["flat"]))
        return Plan(restrict, [], "+".join(notes + ["flat"]))
    if tags is None and (index.n if restrict is None else len(restrict)) <= exhaustive_below:
        if restrict is None:
            return Plan(np.zeros(0, np.int64), [(0, index.n)],
                        "+".join(notes + [f"exhaustive({index.n})"]))
        return Plan(restrict, [], "+".join(notes + [f"exhaustive({len(restrict)})"]))
    routed = _route(index, query, q, k, tags, restrict, nprobe=nprobe, beam=beam,
                    min_candidates=min_candidates, max_tag_episodes=max_tag_episodes)
    return dataclasses.replace(routed, path="+".join(notes + [routed.path]))


def _restriction(index: Index, span, speaker, session
                 ) -> tuple[Int[np.ndarray, " r"] | None, list[str]]:
    """Rows allowed by a time range and speaker / session (None = all), and path notes."""
    keys = [("speaker", speaker)] if speaker is not None else []
    keys += [("session", session)] if session is not None else []
    if span is None and not keys:
        return None, []
    start, end = span if span is not None else (None, None)
    ids = None
    for key in keys or ["*"]:
        found = index.temporal.range(start, end, key)
        ids = found if ids is None else np.intersect1d(ids, found)
    return index.live_rows(ids), [f"temporal({len(ids)})"]


def _route(index: Index, query, q, k, tags, restrict, *, nprobe, beam, min_candidates,
           max_tag_episodes) -> Plan:
    """The candidates of a swift search within a restriction (its path without the
    restriction's note)."""
    fallback = None
    if tags is not None:
        tags = [tags] if isinstance(tags, str) else list(tags)
        known = [t for t in tags if index.tag_known(t)]
        if known:
            rows = index.tag_rows(known)
            if restrict is not None:
                rows = np.intersect1d(rows, restrict)
            return Plan(rows, [], f"tags({','.join(known)})", None, tuple(known))
        fallback = f"no episode carries the tags {tags}; searched without them"
    if index.dag is None:
        if restrict is not None:
            return Plan(restrict, [], "temporal-only", fallback)
        return Plan(np.zeros(0, np.int64), [(0, index.n)], "exhaustive(no clusters yet)",
                    fallback)
    if restrict is not None and len(restrict) <= max(min_candidates, k):
        return Plan(restrict, [], "temporal-only", fallback)
    offsets = index.offsets
    fines = index.dag.route(q, beam, nprobe)
    sizes = offsets[fines + 1] - offsets[fines]
    if sizes.sum() < min_candidates:  # widen to the next closest fine topics
        order = np.argsort(-(index.dag.fine @ q))
        extra = order[~np.isin(order, fines)]
        cum = sizes.sum() + np.cumsum(offsets[extra + 1] - offsets[extra])
        fines = np.concatenate([fines, extra[:int(np.searchsorted(cum, min_candidates)) + 1]])
    # Specific keyphrase tags the query names add their episodes.
    named = sorted(t for t in set(candidates(query)) & index.keyphrases.keys()
                   if len(index.keyphrases[t]) <= max_tag_episodes)
    extra = index.tag_rows(named) if named else np.zeros(0, np.int64)
    extra = extra[(extra >= index.ncons) | ~np.isin(index.row_fine[extra], fines)]
    used = tuple(f"fine:{f}" for f in fines) + tuple(named)
    route = f"dag(coarse={beam},fine={len(fines)},keyphrases={len(named)})"
    if restrict is None:
        tail = np.arange(index.ncons, index.n)
        tail = tail[np.isin(index.row_fine[tail], fines)]
        slices = [(int(offsets[f]), int(offsets[f + 1])) for f in fines]
        return Plan(np.union1d(tail, extra), slices, route, fallback, used)
    rows = np.union1d(restrict[np.isin(index.row_fine[restrict], fines)],
                      np.intersect1d(extra, restrict))
    if len(rows) < k:
        return Plan(restrict, [], route, (f"fewer than k={k} episodes of the time range in "
                                          "the routed topics; searched the whole range"), used)
    return Plan(rows, [], route, fallback, used)

