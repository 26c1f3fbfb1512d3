"""SwiftMem's semantic tag index: keyphrase tags, embedding clusters and the tag DAG.

Without an LLM, an episode's tags are its keyphrases (`KeyphraseTagger`: TF-IDF-ranked
non-stopword unigrams and bigrams). Topics come from the embeddings: spherical k-means
gives fine topics, k-means over the fine centroids gives broad ones. The DAG runs
broad topic -> fine topic -> keyphrase, each node covering no more episodes than any of
its parents (specificity increases along every path); a fine topic may hang under two
broad topics, a keyphrase under many fine topics. A query descends it: the closest broad
topics, their closest fine topics, and the keyphrases the query names.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections import Counter
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing done down during each else even
ever every few for from further get gets getting got had has have having he her here hers
herself him himself his how i if in into is it its itself just like made make makes many me
might more most much must my myself need never new no nor not now of off oh ok okay on once
one only or other our ours ourselves out over own really said same say says see she should
so some still such sure than thanks thank that the their theirs them themselves then there
these they thing things think this those though through to too under until up us very want
was way we well were what when where which while who whom why will with would yeah yes yet
you your yours yourself yourselves lot lots know going go gonna great good glad hey hi wow
awesome cool amazing time times day days today yesterday tomorrow also totally definitely
""".split())
_WORD = re.compile(r"[a-z][a-z'\-]*[a-z]|[a-z]")


class Tagger(Protocol):
    """What the store asks of a tagger (an LLM tagger plugs in here).

    `tag(texts)` returns each text's tags (short lowercase strings, most salient first);
    `observe(texts)` lets a corpus-statistics tagger update itself before tagging them.
    """

    def tag(self, texts: list[str]) -> list[list[str]]: ...

    def observe(self, texts: list[str]) -> None: ...


def words(text: str) -> list[str]:
    """Lowercase word tokens of text."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def candidates(text: str) -> list[str]:
    """Keyphrase candidates: non-stopword unigrams (3+ letters) and adjacent bigrams of them."""
    toks = [w.strip("'-") for w in words(text)]
    keep = [len(w) >= 3 and w not in STOPWORDS and not w.endswith("'s") for w in toks]
    out = [w for w, k in zip(toks, keep, strict=True) if k]
    pairs = zip(toks[:-1], toks[1:], keep[:-1], keep[1:], strict=True)
    out += [f"{a} {b}" for a, b, ka, kb in pairs if ka and kb]
    return out


class KeyphraseTagger:
    """TF-IDF keyphrases over the texts observed so far.

    Args:
      max_tags: tags per text.
    """

    def __init__(self, max_tags: int = 3):
        if max_tags < 1:
            raise ValueError(f"expected max_tags >= 1, got {max_tags}")
        self.max_tags = max_tags
        self.df: Counter[str] = Counter()
        self.docs = 0

    def observe(self, texts: list[str]) -> None:
        for text in texts:
            self.df.update(set(candidates(text)))
        self.docs += len(texts)

    def tag(self, texts: list[str]) -> list[list[str]]:
        out = []
        for text in texts:
            tf = Counter(candidates(text))
            score = {c: n * math.log((1 + self.docs) / (1 + self.df[c])) * (1.5 if " " in c else 1)
                     for c, n in tf.items()}
            out.append(sorted(score, key=lambda c: (-score[c], c))[:self.max_tags])
        return out


@functools.partial(jax.jit, static_argnames=("k", "iters"))
def _kmeans(x: Float[Array, "n d"], weights: Float[Array, " n"], key: jax.Array, k: int,
            iters: int) -> Float[Array, "k d"]:
    init = _kmeans_pp(x, weights, key, k)

    def step(c, _):
        assign = jnp.argmax(x @ c.T, axis=1)
        sums = jax.ops.segment_sum(x * weights[:, None], assign, num_segments=k)
        norms = jnp.linalg.norm(sums, axis=1, keepdims=True)
        return jnp.where(norms > 0, sums / jnp.maximum(norms, 1e-12), c), None

    return jax.lax.scan(step, init, None, length=iters)[0]


def _kmeans_pp(x, weights, key, k):
    """k-means++ seeding: each next centre drawn with probability ~ weight * (1 - cos)."""
    keys = jax.random.split(key, k)
    first = jax.random.choice(keys[0], x.shape[0], p=weights / jnp.sum(weights))
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    dist = jnp.maximum(1.0 - x @ x[first], 0.0)

    def pick(i, state):
        centers, dist = state
        p = weights * dist
        nxt = jax.random.choice(keys[i], x.shape[0], p=p / jnp.maximum(jnp.sum(p), 1e-30))
        return centers.at[i].set(x[nxt]), jnp.minimum(dist, jnp.maximum(1.0 - x @ x[nxt], 0.0))

    return jax.lax.fori_loop(1, k, pick, (centers, dist))[0]


def spherical_kmeans(x: Float[np.ndarray, "n d"], k: int, *, iters: int = 20, seed: int = 0,
                     sample: int = 65536, weights: np.ndarray | None = None
                     ) -> Float[np.ndarray, "k d"]:
    """Unit-norm centroids of k clusters of unit vectors (Lloyd's iterations on cosine).

    Args:
      x: unit-norm rows.
      k: number of clusters (<= rows).
      iters: Lloyd iterations.
      seed: sampling seed.
      sample: at most this many rows are clustered (a uniform sample, seeded by k-means++);
        assign all with `assign`.
      weights: optional row weights (initial draw and centroid means).

    Returns:
      float32 centroids.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"expected 1 <= k <= {n} rows, got k={k}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    # Rows padded to a power of two with weight 0 (never drawn, never counted): a growing
    # store compiles once per doubling, not once per size.
    size = 1 << (len(rows) - 1).bit_length()
    xs = np.zeros((size, x.shape[1]), np.float32)
    xs[:len(rows)] = x[rows]
    w = np.zeros(size, np.float32)
    w[:len(rows)] = 1.0 if weights is None else weights[rows]
    return np.asarray(_kmeans(jnp.asarray(xs), jnp.asarray(w), jax.random.key(seed), k, iters))


@jax.jit
def _nearest(x, c):
    return jnp.argmax(x @ c.T, axis=1).astype(jnp.int32)


def assign(x: Float[np.ndarray, "n d"], centroids: Float[np.ndarray, "k d"],
           chunk: int = 65536) -> Int[np.ndarray, " n"]:
    """Index of each row's most similar centroid (chunked, jitted)."""
    out = np.empty(len(x), np.int32)
    c = jnp.asarray(centroids)
    for s in range(0, len(x), chunk):
        part = x[s:s + chunk]
        padded = np.zeros((chunk, x.shape[1]), np.float32)
        padded[:len(part)] = part
        out[s:s + len(part)] = np.asarray(_nearest(jnp.asarray(padded), c))[:len(part)]
    return out


@dataclasses.dataclass
class TagDAG:
    """The broad -> fine -> keyphrase DAG over a consolidated memory.

    Attributes:
      coarse: (K1, d) broad-topic centroids.
      fine: (K2, d) fine-topic centroids.
      fine_parents: for each fine topic, its broad topics (1 or 2).
      coarse_children: for each broad topic, its fine topics.
      fine_keyphrases: for each fine topic, the keyphrase tags under it.
      sizes: episodes under each node, keyed "coarse:i", "fine:j", "kw:<phrase>".
      names: a readable name per fine topic (its most frequent keyphrases).
    """

    coarse: np.ndarray
    fine: np.ndarray
    fine_parents: list[list[int]]
    coarse_children: list[list[int]]
    fine_keyphrases: list[list[str]]
    sizes: dict[str, int]
    names: list[str]

    def edges(self) -> list[tuple[str, str]]:
        """Every (parent, child) edge as node names."""
        out = [(f"coarse:{p}", f"fine:{j}") for j, ps in enumerate(self.fine_parents) for p in ps]
        out += [(f"fine:{j}", f"kw:{t}") for j, ts in enumerate(self.fine_keyphrases) for t in ts]
        return out

    def route(self, q: Float[np.ndarray, " d"], beam: int, nprobe: int) -> Int[np.ndarray, " m"]:
        """Fine topics for a query: the `beam` closest broad topics, then their `nprobe`
        closest fine topics, closest first."""
        top = np.argsort(-(self.coarse @ q))[:beam]
        fines = np.unique(np.concatenate([self.coarse_children[c] for c in top]))
        scores = self.fine[fines] @ q
        return fines[np.argsort(-scores)[:nprobe]]


def build_dag(emb: Float[np.ndarray, "n d"], fine_of: Int[np.ndarray, " n"],
              fine: Float[np.ndarray, "k d"], tags: list[list[str]],
              tag_counts: dict[str, int], *, margin: float = 0.05, seed: int = 0) -> TagDAG:
    """The DAG over clustered episodes.

    Args:
      emb: episode embeddings (unit rows).
      fine_of: each episode's fine topic.
      fine: fine-topic centroids.
      tags: each episode's keyphrases (same order as emb).
      tag_counts: episodes per keyphrase over the whole memory.
      margin: a fine topic also hangs under its second-closest broad topic when that one
        is within `margin` cosine of the closest.
      seed: k-means seed.

    Returns:
      A `TagDAG` whose every edge goes from a node to one covering no more episodes.
    """
    k2 = len(fine)
    sizes_fine = np.bincount(fine_of, minlength=k2)
    k1 = max(1, round(math.sqrt(k2)))
    coarse = (spherical_kmeans(fine, k1, seed=seed, weights=np.maximum(sizes_fine, 1).astype(
        np.float32)) if k1 > 1 else _normalize(fine.mean(0, keepdims=True)))
    sim = fine @ coarse.T
    order = np.argsort(-sim, axis=1)
    parents = []
    for j in range(k2):
        ps = [int(order[j, 0])]
        if k1 > 1 and sim[j, order[j, 0]] - sim[j, order[j, 1]] <= margin:
            ps.append(int(order[j, 1]))
        parents.append(ps)
    children = [[] for _ in range(k1)]
    for j, ps in enumerate(parents):
        for p in ps:
            children[p].append(j)
    sizes = {f"fine:{j}": int(s) for j, s in enumerate(sizes_fine)}
    for c in range(k1):
        sizes[f"coarse:{c}"] = int(sum(sizes_fine[j] for j in children[c]))
    per_fine: list[Counter] = [Counter() for _ in range(k2)]
    for f, ts in zip(fine_of, tags, strict=True):
        per_fine[f].update(ts)
    fine_keyphrases = [sorted(t for t in counts if tag_counts.get(t, 0) <= sizes_fine[j])
                       for j, counts in enumerate(per_fine)]
    sizes.update({f"kw:{t}": int(n) for t, n in tag_counts.items()})
    names = [", ".join(t for t, _ in counts.most_common(3)) or f"topic {j}"
             for j, counts in enumerate(per_fine)]
    return TagDAG(coarse.astype(np.float32), fine.astype(np.float32), parents, children,
                  fine_keyphrases, sizes, names)


def _normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
