"""sft-sweep: supervised fine-tuning of LLMs with Hydra-composed configs and hyperparameter sweeps."""

__version__ = "0.1.0"
