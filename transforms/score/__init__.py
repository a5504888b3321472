"""The score stage: title-passage cosine with a sentence-transformers model through Beam RunInference."""
