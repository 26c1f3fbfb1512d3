"""SwiftMem on LoCoMo (evidence recall, latency) and a 10^4..10^6 synthetic scale test.

Search settings are (label, options for `MemoryStore.search`).
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.locomo_dir = ""  # "" = the six conversations shipped in effjax/data/files/locomo
    c.conversations = 0  # how many LoCoMo conversations (0 = all)
    c.ks = (5, 10, 25)
    # LoCoMo: one on-disk store per conversation (400-700 turns), consolidated with small topics
    c.locomo_cluster_size = 32
    c.locomo_settings = (
        ("SwiftMem nprobe=4", {"nprobe": 4, "min_candidates": 0}),
        ("SwiftMem nprobe=8", {"nprobe": 8, "min_candidates": 0}),
        ("SwiftMem nprobe=4 + time hints", {"nprobe": 4, "min_candidates": 0,
                                            "time_range": "auto"}),
        ("flat + time hints", {"mode": "flat", "time_range": "auto"}),
    )
    # Scale: all LoCoMo turns planted among synthetic episodes; LoCoMo questions as queries
    c.sizes = (10_000, 30_000, 100_000, 300_000, 1_000_000)
    c.synthetic_seed, c.encode_chunk = 0, 20_000
    c.scale_cluster_size = 512
    c.scale_settings = (
        ("SwiftMem nprobe=16", {"nprobe": 16, "beam": 8, "min_candidates": 0}),
        ("SwiftMem nprobe=64", {"nprobe": 64, "beam": 16, "min_candidates": 0}),
    )
    c.hnsw_m, c.hnsw_ef_construction, c.hnsw_ef_search = 16, 40, 256  # builds 10^6 on 2 cores
    c.latency_queries = 200  # queries timed per method (recall uses every question)
    c.cache_dir = ".cache/swiftmem"  # synthetic embeddings and LoCoMo stores
    c.cache = "experiments/results/swiftmem.json"
    c.output = "experiments/results/swiftmem.md"
    c.plot = "experiments/results/swiftmem.png"
    c.compute = True  # False: write the report from the cache only
    if variant == "tiny":  # the real pipeline on one conversation and two small memories
        c.conversations = 1
        c.sizes = (2_000, 4_000)
        c.encode_chunk = 1_000
        c.scale_cluster_size = 64
        c.hnsw_m, c.hnsw_ef_construction = 16, 32
        c.latency_queries = 10
        c.cache_dir = "/tmp/effjax_swiftmem_tiny"
        c.cache = "/tmp/effjax_swiftmem_tiny/swiftmem.json"
        c.output = "/tmp/effjax_swiftmem_tiny/swiftmem.md"
        c.plot = "/tmp/effjax_swiftmem_tiny/swiftmem.png"
    return c
