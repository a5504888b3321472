"""``cmtp mine``: ANN hard-negative mining with faiss into streaming-ready training-example shards."""
