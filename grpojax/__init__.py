"""grpojax: RL post-training of language models with GRPO and its variants, in JAX/Flax."""

__version__ = "0.1.0"
