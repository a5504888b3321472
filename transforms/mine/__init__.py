"""Hard-negative mining's domain logic: its options, the candidate pool on disk, the faiss index, the false-negative
guards and seeded sampling, and the miner that applies them per query. The Beam driver is ``pipelines/mine``."""
