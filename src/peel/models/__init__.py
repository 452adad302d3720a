"""Models: LightGCN backbone (stage a), group fine-tuning model and controller (stage b)."""
