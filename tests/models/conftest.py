"""Tokenizer checkpoints shared by the tokenizer and chat-template tests (built once)."""

import pathlib

import pytest
import tokenizers
import tokenizers.processors

from grpojax.models import tokenizers as tok_lib
from tests.models import tokenizer_files as files


@pytest.fixture(scope="package")
def qwen_bpe() -> tokenizers.Tokenizer:
  return files.train_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])


@pytest.fixture(scope="package")
def llama_bpe() -> tokenizers.Tokenizer:
  tok = files.train_bpe(["<s>", "</s>"])
  bos_id = tok.token_to_id("<s>")
  tok.post_processor = tokenizers.processors.TemplateProcessing(
    single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
  )
  return tok


@pytest.fixture(scope="package")
def qwen_dir(tmp_path_factory, qwen_bpe) -> pathlib.Path:
  im_end, endoftext = qwen_bpe.token_to_id("<|im_end|>"), qwen_bpe.token_to_id("<|endoftext|>")
  return files.write_checkpoint(
    tmp_path_factory.mktemp("qwen"),
    qwen_bpe,
    files.QWEN_CONFIG,
    generation_config={"bos_token_id": endoftext, "eos_token_id": [im_end, endoftext]},
  )


@pytest.fixture(scope="package")
def llama_dir(tmp_path_factory, llama_bpe) -> pathlib.Path:
  return files.write_checkpoint(
    tmp_path_factory.mktemp("llama"),
    llama_bpe,
    files.LLAMA_CONFIG,
    generation_config={"eos_token_id": llama_bpe.token_to_id("</s>")},
    template_file=files.LLAMA_TEMPLATE,
  )


@pytest.fixture(scope="package")
def qwen_pair(qwen_dir):
  return tok_lib.load_tokenizer(qwen_dir), files.hf_reference(qwen_dir)


@pytest.fixture(scope="package")
def llama_pair(llama_dir):
  return tok_lib.load_tokenizer(llama_dir), files.hf_reference(llama_dir)
