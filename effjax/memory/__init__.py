"""SwiftMem agent memory: MiniLM encoder, temporal and tag-DAG indexes, a durable store."""

from effjax.memory.baselines import BASELINES, FaissFlat, FaissHNSW, FlatJax, FlatNumpy
from effjax.memory.encoder import (
    Encoder,
    EncoderConfig,
    encode_tokens,
    load_encoder_params,
    minilm_path,
    quantize_weights,
    read_encoder_config,
)
from effjax.memory.locomo import Conversation, Question, Turn, load_locomo
from effjax.memory.repair import RepairReport, repair_store
from effjax.memory.store import (
    MODES,
    CorruptStoreError,
    Episode,
    Hit,
    MemoryStore,
    SearchResult,
)
from effjax.memory.synthetic import SyntheticEpisodes, synthetic_episodes
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
    "MODES",
    "STOPWORDS",
    "Conversation",
    "CorruptStoreError",
    "Encoder",
    "EncoderConfig",
    "Episode",
    "FaissFlat",
    "FaissHNSW",
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
    "assign",
    "build_dag",
    "candidates",
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
