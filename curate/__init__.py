"""curate: curate and select training data for LLM fine-tuning and pretraining."""

__version__ = "0.1.0"
