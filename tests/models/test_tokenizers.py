"""Tests for grpojax/models/tokenizers.py: `HFTokenizer` against `transformers` on the same
checkpoint directory (tests/models/tokenizer_files.py), and its file handling."""

import json

import hypothesis
import hypothesis.strategies as st
import pytest

from grpojax.models import tokenizers as tok_lib
from tests.models import tokenizer_files as files

# ---------------------------------------------------------------------------------------------
# HFTokenizer against transformers.


@pytest.mark.parametrize("pair_name", ["qwen_pair", "llama_pair"])
def test_hf_special_ids_match_transformers(pair_name, request):
  ours, ref = request.getfixturevalue(pair_name)
  assert isinstance(ours, tok_lib.Tokenizer)
  assert ours.vocab_size == len(ref)
  assert ours.bos_id == ref.bos_token_id
  assert ours.eos_ids[0] == ref.eos_token_id
  assert ours.pad_id == (ref.pad_token_id if ref.pad_token_id is not None else ref.eos_token_id)


@pytest.mark.parametrize("pair_name", ["qwen_pair", "llama_pair"])
@pytest.mark.parametrize("text", files.TEXTS)
def test_hf_encode_decode_match_transformers(pair_name, text, request):
  ours, ref = request.getfixturevalue(pair_name)
  ids = ours.encode(text)
  assert ids == ref.encode(text, add_special_tokens=False)
  assert ours.encode(text, add_special_tokens=True) == ref.encode(text)
  for skip in (True, False):
    assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(text=st.text(max_size=40))
def test_hf_encode_matches_transformers_on_arbitrary_text(qwen_pair, text):
  ours, ref = qwen_pair
  ids = ours.encode(text)
  assert ids == ref.encode(text, add_special_tokens=False)
  # Byte-level BPE is lossless.
  assert ours.decode(ids) == text == ref.decode(ids, skip_special_tokens=True)


def test_hf_special_tokens_in_text_are_single_ids(qwen_pair):
  ours, _ = qwen_pair
  ids = ours.encode("<|im_start|>user<|im_end|>")
  assert ids[0] == ours.token_to_id("<|im_start|>")
  assert ids[-1] == ours.token_to_id("<|im_end|>")
  assert ours.decode(ids, skip_special_tokens=True) == "user"


def test_hf_decode_accepts_numpy_ids(qwen_pair):
  np = pytest.importorskip("numpy")
  ours, _ = qwen_pair
  ids = ours.encode("What is 12 + 30?")
  assert ours.decode(np.asarray(ids, dtype=np.int32)) == "What is 12 + 30?"


# ---------------------------------------------------------------------------------------------
# HFTokenizer file handling.


def test_eos_ids_from_generation_config_list(qwen_dir, qwen_bpe):
  tok = tok_lib.load_tokenizer(qwen_dir)
  im_end, endoftext = qwen_bpe.token_to_id("<|im_end|>"), qwen_bpe.token_to_id("<|endoftext|>")
  # Config eos first, then generation_config's other ids, without duplicates.
  assert tok.eos_ids == (im_end, endoftext)
  assert tok.pad_id == endoftext
  assert tok.bos_id is None  # generation_config's bos_token_id does not make a tokenizer bos.


def test_eos_ids_from_generation_config_int(llama_dir, llama_bpe):
  tok = tok_lib.load_tokenizer(llama_dir)
  assert tok.eos_ids == (llama_bpe.token_to_id("</s>"),)
  assert tok.pad_id == llama_bpe.token_to_id("</s>")  # No pad token: falls back to eos.


def test_eos_only_in_generation_config(tmp_path, qwen_bpe):
  config = {k: v for k, v in files.QWEN_CONFIG.items() if k != "eos_token"}
  endoftext = qwen_bpe.token_to_id("<|endoftext|>")
  path = files.write_checkpoint(
    tmp_path, qwen_bpe, config, generation_config={"eos_token_id": endoftext}
  )
  assert tok_lib.load_tokenizer(path).eos_ids == (endoftext,)


def test_no_eos_anywhere_is_an_error(tmp_path, qwen_bpe):
  config = {k: v for k, v in files.QWEN_CONFIG.items() if k != "eos_token"}
  path = files.write_checkpoint(tmp_path, qwen_bpe, config)
  with pytest.raises(ValueError, match="no end-of-sequence token"):
    tok_lib.load_tokenizer(path)


def test_add_bos_token_prepends_bos_missing_from_post_processor(tmp_path, qwen_bpe):
  # qwen_bpe has no post-processor, so only add_bos_token can put bos in front.
  config = {**files.QWEN_CONFIG, "bos_token": "<|endoftext|>", "add_bos_token": True}
  tok = tok_lib.load_tokenizer(files.write_checkpoint(tmp_path, qwen_bpe, config))
  bos = qwen_bpe.token_to_id("<|endoftext|>")
  assert tok.encode("hi there", add_special_tokens=True) == [bos, *tok.encode("hi there")]
  assert tok.encode("<|endoftext|>hi", add_special_tokens=True) == tok.encode("<|endoftext|>hi")


def test_missing_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    tok_lib.load_tokenizer(tmp_path / "nowhere")


def test_missing_tokenizer_json_names_the_file(tmp_path):
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(files.QWEN_CONFIG), encoding="utf-8")
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    tok_lib.load_tokenizer(tmp_path)


@pytest.mark.parametrize("content", ["{not json", '{"version": "1.0", "model": 3}', "[]"])
def test_corrupt_tokenizer_json_names_the_file(tmp_path, content):
  (tmp_path / "tokenizer.json").write_text(content, encoding="utf-8")
  with pytest.raises(ValueError, match="malformed .*tokenizer.json"):
    tok_lib.load_tokenizer(tmp_path)


@pytest.mark.parametrize(
  "filename,content",
  [
    ("tokenizer_config.json", "{oops"),
    ("tokenizer_config.json", '["a list"]'),
    ("tokenizer_config.json", '{"eos_token": 7}'),
    ("tokenizer_config.json", '{"add_bos_token": "yes"}'),
    ("tokenizer_config.json", '{"chat_template": 3}'),
    ("generation_config.json", "{oops"),
    ("generation_config.json", '{"eos_token_id": "two"}'),
    ("generation_config.json", '{"eos_token_id": [1, true]}'),
  ],
)
def test_corrupt_side_files_name_the_file(tmp_path, qwen_bpe, filename, content):
  path = files.write_checkpoint(tmp_path, qwen_bpe, files.QWEN_CONFIG)
  (path / filename).write_text(content, encoding="utf-8")
  with pytest.raises(ValueError, match=f"malformed .*{filename}"):
    tok_lib.load_tokenizer(path)


def test_special_token_outside_vocabulary(tmp_path, qwen_bpe):
  config = {**files.QWEN_CONFIG, "eos_token": "<|not_a_token|>"}
  with pytest.raises(ValueError, match="eos_token '<\\|not_a_token\\|>' is not in the vocabulary"):
    tok_lib.load_tokenizer(files.write_checkpoint(tmp_path, qwen_bpe, config))


def test_eos_id_outside_vocabulary(tmp_path, qwen_bpe):
  path = files.write_checkpoint(
    tmp_path, qwen_bpe, files.QWEN_CONFIG, generation_config={"eos_token_id": 10**6}
  )
  with pytest.raises(ValueError, match="eos id 1000000 is outside the vocabulary"):
    tok_lib.load_tokenizer(path)


def test_special_tokens_map_fills_in_missing_tokens(tmp_path, qwen_bpe):
  config = {k: v for k, v in files.QWEN_CONFIG.items() if k not in ("eos_token", "pad_token")}
  path = files.write_checkpoint(tmp_path, qwen_bpe, config)
  (path / "special_tokens_map.json").write_text(
    json.dumps({"eos_token": "<|im_end|>", "pad_token": {"content": "<|endoftext|>"}}),
    encoding="utf-8",
  )
  tok = tok_lib.load_tokenizer(path)
  assert tok.eos_ids == (qwen_bpe.token_to_id("<|im_end|>"),)
  assert tok.pad_id == qwen_bpe.token_to_id("<|endoftext|>")
