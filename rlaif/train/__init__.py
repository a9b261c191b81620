"""Training stages: tiny-model builder, SFT, reward model, DPO."""
