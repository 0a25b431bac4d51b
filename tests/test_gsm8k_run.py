"""The real-checkpoint recipe end to end: a tiny random HF checkpoint, its tokenizer with a chat
template, and a few GSM8K-format rows, through `train_and_evaluate`."""

import json
import os
import sys

import pytest
import tokenizers
from flax import nnx

from grpojax import models, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHATML = (
  "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
  "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
  "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ROWS = [
  {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3+4=7\n#### 7"},
  {"question": "A box holds 6 pens. How many pens in 2 boxes?", "answer": "6*2=12\n#### 12"},
  {"question": "Sam had 10 coins and lost 4. How many are left?", "answer": "10-4=6\n#### 6"},
  {"question": "There are 5 cats with 4 legs each. How many legs?", "answer": "5*4=20\n#### 20"},
  {"question": "Ann reads 8 pages a day. Pages in 3 days?", "answer": "8*3=24\n#### 24"},
  {"question": "A bus has 9 seats and 2 are taken. Free seats?", "answer": "9-2=7\n#### 7"},
]


@pytest.fixture(scope="module")
def checkpoint_and_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("gsm8k")
  data = root / "train.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=300,
    special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator([r["question"] + " " + r["answer"] for r in ROWS], trainer)
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=tok.get_vocab_size(),
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=16,
    attention_bias=True,
    tie_word_embeddings=True,
  )
  ckpt = root / "policy"
  models.save_pretrained(models.Decoder(cfg, rngs=nnx.Rngs(0)), str(ckpt))
  tok.save(str(ckpt / "tokenizer.json"))
  (ckpt / "tokenizer_config.json").write_text(
    json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML})
  )
  return str(ckpt), str(data)


def test_gsm8k_recipe_runs_on_a_tiny_checkpoint(checkpoint_and_data, tmp_path, capsys):
  sys.path.insert(0, REPO)
  from configs import gsm8k

  ckpt, data = checkpoint_and_data
  config = gsm8k.get_config("local")
  config.model.checkpoint = ckpt
  config.model.dtype = "float32"
  config.task.data_path = data
  config.task.heldout_size = 1  # six rows: the 10% hash split holds out one
  result = train.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {
    "greedy_accuracy",
    "avg@4",
    "pass@4",
    "maj@4",
    "greedy_length",
    "response_length",
  }
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert last.startswith("held-out accuracy: warm start ")
  # The trained policy is written back as a checkpoint the loader (and transformers) reads.
  reloaded = models.from_pretrained(os.path.join(str(tmp_path), "policy"))
  assert reloaded.config.vocab_size == models.load_config(ckpt).vocab_size
  # It carries the source checkpoint's tokenizer files, chat template included.
  for name in ("tokenizer.json", "tokenizer_config.json"):
    with open(os.path.join(ckpt, name)) as src, open(os.path.join(tmp_path, "policy", name)) as out:
      assert out.read() == src.read()
