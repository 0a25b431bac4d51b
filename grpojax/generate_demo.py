"""A seconds-long generation demo: a tiny random Qwen2 policy saved, reloaded and sampled.

  python -m grpojax.generate_demo --workdir=/tmp/grpojax_demo

It exercises the pieces every RL step runs on: a Hugging Face-format checkpoint written and read
back, the built-in character tokenizer, and the jitted KV-cache sampler with G samples a prompt.
"""

import os
import time

import jax
from absl import app, flags, logging
from flax import nnx

from grpojax import models, sampling
from grpojax.models import tokenizers

flags.DEFINE_string("workdir", "/tmp/grpojax_demo", "Where the demo checkpoint is written.")
flags.DEFINE_integer("seed", 0, "PRNG seed for the weights and the samples.")
flags.DEFINE_integer("num_samples", 4, "Samples per prompt.")
flags.DEFINE_integer("max_new_tokens", 24, "Tokens generated per sample.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  tok = tokenizers.CharTokenizer(tokenizers.ARITHMETIC_ALPHABET)
  cfg = models.ModelConfig(
    model_type="qwen2", vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128,
    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, attention_bias=True,
    tie_word_embeddings=True, bos_token_id=tok.bos_id, eos_token_id=tok.eos_ids[0])
  model = models.Decoder(cfg, rngs=nnx.Rngs(FLAGS.seed))
  path = os.path.join(FLAGS.workdir, "random_qwen2")
  models.save_pretrained(model, path, overwrite=True)
  model = models.from_pretrained(path)
  logging.info("saved and reloaded a %s checkpoint at %s", cfg.model_type, path)

  prompts = ["12+7=", "3*4=", "what is 9-5? "]
  encoded = [[tok.bos_id, *tok.encode(p)] for p in prompts]
  kw = dict(max_new_tokens=FLAGS.max_new_tokens, num_samples=FLAGS.num_samples,
            temperature=1.0, top_p=0.95, eos_ids=tok.eos_ids, pad_id=tok.pad_id)
  t = time.perf_counter()
  out = sampling.generate(model, encoded, key=jax.random.key(FLAGS.seed), **kw)
  out.tokens.block_until_ready()
  first = time.perf_counter() - t
  t = time.perf_counter()
  out = sampling.generate(model, encoded, key=jax.random.key(FLAGS.seed + 1), **kw)
  out.tokens.block_until_ready()
  again = time.perf_counter() - t
  for i, row in enumerate(out.tokens.tolist()):
    n = int(out.mask[i].sum())
    print(f"{prompts[i // FLAGS.num_samples]!r:18} -> {tok.decode(row[:n])!r}")
  print(f"generated {int(out.mask.sum())} tokens; first call {first:.2f} s (with compile), "
        f"second {again * 1e3:.0f} ms. The policy is untrained: the answers are noise.")


if __name__ == "__main__":
  app.run(main)
