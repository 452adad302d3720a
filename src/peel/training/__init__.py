"""Training stages: the shared loop, BPR sampling, pretraining (a), grouping, fine-tuning (b)."""
