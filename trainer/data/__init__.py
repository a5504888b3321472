"""Training data: Parquet shards streamed into batches with a resumable position."""
