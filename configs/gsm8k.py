"""GRPO on GSM8K from a local Hugging Face checkpoint: the real-model recipe, for an accelerator.

  python -m grpojax.main --config=configs/gsm8k.py --workdir=/tmp/grpojax_gsm8k \
    --config.model.checkpoint=/path/to/Qwen2.5-0.5B-Instruct \
    --config.task.data_path=../shared/data/gsm8k/train.jsonl \
    --config.task.heldout_path=../shared/data/gsm8k/test.jsonl

The checkpoint directory holds config.json, safetensors weights and the tokenizer files; the
question is rendered with its chat template and the reward is the number after the completion's
last number (GSM8K's `#### N` answers). No warm start: the policy is already a chat model.
Settings follow common small-model GSM8K GRPO runs (lr 1e-6, 64 prompts x 8 samples, 512 new
tokens); the outcome has not been measured with this code yet, and a 2-core CPU is far too slow
for it (use `:local` there).

`--config=configs/gsm8k.py:local` shrinks it to a smoke run (still needs the two paths).
"""

from configs import common


def get_config(arg: str | None = None):
  config = common.base("grpo")
  config.task.name = "gsm8k"
  config.task.heldout_size = 512
  config.tokenizer.chat_template = True
  config.model.dtype = "bfloat16"
  config.warm_start.steps = 0
  config.rollout.update(
    dict(
      prompts_per_step=64,
      samples_per_prompt=8,
      max_prompt_len=320,
      max_new_tokens=512,
      temperature=1.0,
    )
  )
  config.reward.overlong.max_len = 512
  config.reward.overlong.cache = 128
  config.optim.update(
    dict(learning_rate=1e-6, warmup_steps=10, schedule="constant", weight_decay=0.01)
  )
  config.train.update(dict(steps=500, microbatch_rows=32))
  config.eval.update(dict(every=50, num_prompts=512, batch_prompts=64, samples=8, pass_k=8))
  config.checkpoint.every = 50
  config = common.finish(config, arg)
  if arg == "local":
    config.unlock()
    config.rollout.update(dict(max_prompt_len=128, max_new_tokens=16))
    config.eval.num_prompts = 2
    config.task.heldout_size = 2
    config.lock()
  return config
