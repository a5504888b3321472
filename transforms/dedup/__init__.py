"""The dedup stage: MinHash-LSH near-duplicate clustering of pairs, with connected components in Beam."""
