"""Pieces every stage shares: stable ids, dead letters, deterministic Parquet shards, outcome counting."""
