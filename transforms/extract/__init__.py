"""The extract stage: raw dumps -> cleaned (title, passage) pairs, pretraining text and dead letters."""
