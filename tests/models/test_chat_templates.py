"""Tests for grpojax/models/chat_templates.py: chat templates render as in `transformers`, through
`HFTokenizer.apply_chat_template` on the same checkpoint directory."""

import jinja2
import pytest

from grpojax.models import tokenizers as tok_lib
from tests.models import tokenizer_files as files


@pytest.mark.parametrize("add_generation_prompt", [True, False])
# With a system turn, and with the default system turn.
@pytest.mark.parametrize(
  "messages", [files.CONVERSATION, files.CONVERSATION[1:]], ids=["system", "default_system"]
)
def test_qwen_chat_template_matches_transformers(qwen_pair, messages, add_generation_prompt):
  ours, ref = qwen_pair
  expected = ref.apply_chat_template(
    messages, tokenize=False, add_generation_prompt=add_generation_prompt
  )
  got = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
  assert got == expected
  assert got.startswith("<|im_start|>system\n")
  assert got.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_qwen_chat_template_with_tools_matches_transformers(qwen_pair):
  ours, ref = qwen_pair
  tools = [
    {
      "type": "function",
      "function": {
        "name": "calculer",
        "description": "Évalue une expression arithmétique — 数学",
        "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}},
      },
    }
  ]
  messages = [
    {"role": "user", "content": "Combien font 6 × 7?"},
    {
      "role": "assistant",
      "content": None,  # Dropped, as transformers drops None-valued keys.
      "tool_calls": [{"function": {"name": "calculer", "arguments": {"expr": "6 × 7"}}}],
    },
    {"role": "tool", "content": "42"},
  ]
  expected = ref.apply_chat_template(
    messages, tools=tools, tokenize=False, add_generation_prompt=True
  )
  got = ours.apply_chat_template(messages, tools=tools, add_generation_prompt=True)
  assert got == expected
  # tojson must not escape non-ASCII.
  assert "Évalue une expression arithmétique — 数学" in got
  assert '"6 × 7"' in got


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_template_file_chat_template_matches_transformers(llama_pair, add_generation_prompt):
  ours, ref = llama_pair
  meta = {"auteur": "Zoë", "emoji": "🙂"}
  expected = ref.apply_chat_template(
    files.CONVERSATION, tokenize=False, add_generation_prompt=add_generation_prompt, meta=meta
  )
  got = ours.apply_chat_template(
    files.CONVERSATION, add_generation_prompt=add_generation_prompt, meta=meta
  )
  assert got == expected
  assert got.startswith("<s>")
  assert '{"auteur": "Zoë", "emoji": "🙂"}' in got
  assert "this template must not be used" not in got
  assert got.endswith("[ASSISTANT]\n") == add_generation_prompt


def test_template_raise_exception_propagates(llama_pair):
  ours, ref = llama_pair
  messages = [{"role": "tool", "content": "42"}]
  with pytest.raises(jinja2.TemplateError, match="unsupported role: tool"):
    ref.apply_chat_template(messages, tokenize=False)
  with pytest.raises(jinja2.TemplateError, match="unsupported role: tool"):
    ours.apply_chat_template(messages)


def test_none_valued_message_keys_are_dropped_like_transformers(tmp_path, qwen_bpe):
  template = "{% for m in messages %}{{ m.role }}:{{ m.content is defined }};{% endfor %}"
  path = files.write_checkpoint(
    tmp_path, qwen_bpe, {**files.QWEN_CONFIG, "chat_template": template}
  )
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]
  ours, ref = tok_lib.load_tokenizer(path), files.hf_reference(path)
  expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
  assert ours.apply_chat_template(messages, add_generation_prompt=False) == expected
  assert expected == "user:True;assistant:False;"


def test_chat_template_jinja_file_without_config_entry(tmp_path, qwen_bpe):
  config = {k: v for k, v in files.QWEN_CONFIG.items() if k != "chat_template"}
  path = files.write_checkpoint(tmp_path, qwen_bpe, config, template_file=files.QWEN_TEMPLATE)
  tok = tok_lib.load_tokenizer(path)
  prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}])
  assert prompt == (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  )


def test_no_chat_template_is_a_clear_error(tmp_path, qwen_bpe):
  config = {k: v for k, v in files.QWEN_CONFIG.items() if k != "chat_template"}
  tok = tok_lib.load_tokenizer(files.write_checkpoint(tmp_path, qwen_bpe, config))
  with pytest.raises(ValueError, match="has no chat template"):
    tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_empty_conversation_is_an_error(qwen_dir):
  with pytest.raises(ValueError, match="empty conversation"):
    tok_lib.load_tokenizer(qwen_dir).apply_chat_template([])


def test_malformed_chat_template(tmp_path, qwen_bpe):
  path = files.write_checkpoint(tmp_path, qwen_bpe, files.QWEN_CONFIG, template_file="{% if %}")
  with pytest.raises(ValueError, match="chat template 'default' does not parse"):
    tok_lib.load_tokenizer(path)
