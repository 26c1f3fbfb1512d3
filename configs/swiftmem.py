"""SwiftMem on LoCoMo (what is embedded, evidence recall, latency, a reader's answer F1)
and the speed-recall frontier of every index at 10^4..10^6 episodes.
"""

import ml_collections

from effjax.memory import DEFAULT_TEMPLATE


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.locomo_dir = ""  # "" = the six conversations shipped in effjax/data/files/locomo
    c.conversations = 0  # how many LoCoMo conversations (0 = all)
    c.ks = (5, 10, 25)
    # LoCoMo: one on-disk store per conversation (400-700 turns) for each embedded string
    c.templates = (("bare text", "{text}"), ("speaker", "{speaker}: {text}"),
                   ("speaker + date", DEFAULT_TEMPLATE))
    c.locomo_cluster_size = 32
    c.locomo_routed = {"nprobe": 4, "min_candidates": 0}  # forced routing (exhaustive_below=0)
    c.locomo_hnsw = {"m": 32, "ef_construction": 200, "ef_search": 64}
    # The reader: SmolLM2-135M-Instruct answers from the top reader_k retrieved turns
    c.reader_questions = 300  # a seeded sample of the answerable questions (0 = all)
    c.reader_k, c.reader_max_new_tokens, c.reader_batch = 5, 16, 8
    # Scale: all LoCoMo turns planted among real-text distractors; LoCoMo questions as queries
    c.sizes = (10_000, 30_000, 100_000, 300_000, 1_000_000)
    c.distractor_seed, c.encode_chunk = 0, 20_000
    c.distractor_pool = 1_000_000  # every size is a prefix of this one memory (>= max(sizes))
    c.scale_cluster_size = 512
    # SwiftMem's (nprobe, beam): fine topics probed, broad topics descended (64 = every broad
    # topic up to 3 x 10^5 episodes, i.e. IVF over the fine topics)
    c.swift_sweep = ((4, 2), (8, 4), (16, 8), (16, 64), (32, 8), (32, 64), (64, 16), (64, 64),
                     (128, 64), (256, 64))
    c.ivf_nprobe = (4, 8, 16, 32, 64, 128, 256)  # IVF-Flat with SwiftMem's number of fine topics
    c.hnsw_m, c.hnsw_ef_construction = 32, (40, 200)
    c.hnsw_ef_search = (16, 32, 64, 128, 256, 512)
    c.target_agree, c.target_p50_ms, c.target_build_s = 0.95, 2.0, 60.0
    c.latency_queries = 200  # queries timed per point (agree@10 and recall use every question)
    c.cache_dir = ".cache/swiftmem"  # distractor embeddings and LoCoMo stores
    c.cache = "experiments/results/swiftmem.json"
    c.output = "experiments/results/swiftmem.md"
    c.plot = "experiments/results/swiftmem.png"
    c.compute = True  # False: write the report from the cache only
    if variant == "tiny":  # the real pipeline on one conversation and two small memories
        c.conversations = 1
        c.reader_questions, c.reader_batch = 8, 4
        c.sizes = (2_000, 4_000)
        c.distractor_pool, c.encode_chunk = 4_000, 1_000
        c.scale_cluster_size = 64
        c.swift_sweep = ((4, 2), (16, 8))
        c.ivf_nprobe = (4, 16)
        c.hnsw_m, c.hnsw_ef_construction, c.hnsw_ef_search = 16, (32,), (16, 64)
        c.latency_queries = 10
        c.cache_dir = "/tmp/effjax_swiftmem_tiny"
        c.cache = "/tmp/effjax_swiftmem_tiny/swiftmem.json"
        c.output = "/tmp/effjax_swiftmem_tiny/swiftmem.md"
        c.plot = "/tmp/effjax_swiftmem_tiny/swiftmem.png"
    return c
