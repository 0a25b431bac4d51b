"""An exported policy directory serves as is: world-readable, with tokenizer files that
`transformers` loads and that encode and generate as grpojax does."""

import json
import os
import stat

import jax
import numpy as np
import pytest
from flax import nnx

from grpojax import models, sampling
from grpojax.models import char_tokenizer, tokenizers


def _modes(root):
  """Permission bits of every directory and file under `root`, by relative path."""
  out = {".": stat.S_IMODE(os.stat(root).st_mode)}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, root)] = stat.S_IMODE(os.stat(path).st_mode)
  return out


def _char_policy(tok):
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=tok.vocab_size,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    head_dim=16,
    attention_bias=True,
    tie_word_embeddings=True,
    bos_token_id=tok.bos_id,
    eos_token_id=tok.eos_ids[0],
  )
  return models.Decoder(cfg, rngs=nnx.Rngs(3))


def test_export_is_world_readable_with_tokenizer_files(tmp_path):
  tok = char_tokenizer.CharTokenizer(char_tokenizer.ARITHMETIC_ALPHABET)
  dest = tmp_path / "policy"
  models.save_pretrained(_char_policy(tok), str(dest), extra_files=char_tokenizer.hf_files(tok))
  modes = _modes(dest)
  assert modes.pop(".") == 0o755
  assert modes and set(modes.values()) == {0o644}, modes
  assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
    modes
  )
  generation = json.loads((dest / "generation_config.json").read_text())
  assert generation == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
  # grpojax's own loader reads the exported tokenizer to the same ids and special tokens.
  loaded = tokenizers.load_tokenizer(str(dest))
  text = "37+45=\n82 (ok)"
  assert loaded.encode(text) == tok.encode(text)
  assert (loaded.pad_id, loaded.bos_id, loaded.eos_ids) == (0, 1, (2,))
  assert loaded.decode(tok.encode(text)) == text


@pytest.mark.parametrize("separator", ["", "\n", ' "q" '])
def test_exported_chat_template_renders_as_the_char_tokenizer(tmp_path, separator):
  tok = char_tokenizer.CharTokenizer(char_tokenizer.ARITHMETIC_ALPHABET + '"', separator)
  files = char_tokenizer.hf_files(tok)
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
  messages = [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "3"}]
  loaded = tokenizers.load_tokenizer(str(tmp_path))
  for gen in (True, False):
    expected = tok.apply_chat_template(messages, add_generation_prompt=gen)
    assert loaded.apply_chat_template(messages, add_generation_prompt=gen) == expected


def test_exported_policy_generates_in_transformers_as_in_grpojax(tmp_path):
  torch = pytest.importorskip("torch", reason="needs the `reference` extra")
  transformers = pytest.importorskip("transformers", reason="needs the `reference` extra")
  tok = char_tokenizer.CharTokenizer(char_tokenizer.ARITHMETIC_ALPHABET)
  model = _char_policy(tok)
  dest = str(tmp_path / "policy")
  models.save_pretrained(model, dest, extra_files=char_tokenizer.hf_files(tok))

  prompts = ["12+34=", "7+8="]
  # A run's prompt ids: bos then the characters (setup.build_run's encode_prompt).
  ours = [[tok.bos_id, *tok.encode(p)] for p in prompts]
  out = sampling.generate(
    model,
    ours,
    key=jax.random.key(0),
    max_new_tokens=6,
    temperature=0.0,
    eos_ids=tok.eos_ids,
    pad_id=tok.pad_id,
  )
  tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)

  # Only the exported directory from here on.
  hf_tok = transformers.AutoTokenizer.from_pretrained(dest)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32)
  for i, prompt in enumerate(prompts):
    ids = hf_tok(prompt).input_ids
    assert ids == ours[i]
    with torch.no_grad():
      gen = hf_model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=6,
        do_sample=False,
      )[0, len(ids) :].tolist()
    expected = tokens[i][mask[i].astype(bool)].tolist()
    assert gen[: len(expected)] == expected
    assert hf_tok.decode(expected, skip_special_tokens=True) == tok.decode(expected)
