"""The cmtp trainer: streams training-example Parquet shards into contrastive training of an encoder."""
