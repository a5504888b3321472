"""Stage 1: RetroMAE pretraining (Xiao et al., "RetroMAE: Pre-Training Retrieval-oriented Language Models Via
Masked Auto-Encoder", EMNLP 2022) with Chinese whole-word masking, streamed and resumable like stages 2 and 3."""
