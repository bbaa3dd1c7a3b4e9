"""sft-sweep: supervised fine-tuning of LLMs with Hydra-composed configs and hyperparameter sweeps."""

from sft_sweep import resolvers  # noqa: F401  (registers ${asset:...} and ${mul:...} before Hydra composes)

__version__ = "0.1.0"
