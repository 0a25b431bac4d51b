"""Tiny Hugging Face tokenizer checkpoints for the tokenizer and chat-template tests.

A byte-level BPE tokenizer trained with the `tokenizers` library on a few sentences, written out
as a checkpoint directory; `transformers` loading the same directory is the independent
reference for encoding, decoding and chat template rendering.
"""

import json
import pathlib

import pytest
import tokenizers
import tokenizers.decoders
import tokenizers.models
import tokenizers.pre_tokenizers
import tokenizers.trainers

CORPUS = [
  "The quick brown fox jumps over the lazy dog.",
  "What is 12 + 30? The answer is 42.",
  "You are a helpful assistant. Please reason step by step.",
  "Les élèves ont répondu: déjà vu, naïve café.",
  "数学很有趣 and emojis 🙂 too",
  "def add(a, b):\n    return a + b\n",
]

# Qwen2.5-Instruct's chat template, verbatim (tools, tool calls, tool responses, tojson).
QWEN_TEMPLATE = (
  "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n"
  "    {%- if messages[0]['role'] == 'system' %}\n"
  "        {{- messages[0]['content'] }}\n    {%- else %}\n"
  "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
  "    {%- endif %}\n"
  '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.'
  "\\n\\nYou are provided with function signatures within <tools></tools> XML tags:"
  '\\n<tools>" }}\n'
  '    {%- for tool in tools %}\n        {{- "\\n" }}\n        {{- tool | tojson }}\n'
  '    {%- endfor %}\n    {{- "\\n</tools>\\n\\nFor each function call, return a json object with '
  "function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
  '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n'
  '</tool_call><|im_end|>\\n" }}\n'
  "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
  "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
  "    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
  "You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
  "{%- for message in messages %}\n"
  '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
  '(message.role == "assistant" and not message.tool_calls) %}\n'
  "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
  "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
  "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n"
  "        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n"
  "            {%- if tool_call.function is defined %}\n"
  "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
  '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n            {{- tool_call.name }}\n'
  '            {{- \'", "arguments": \' }}\n            {{- tool_call.arguments | tojson }}\n'
  "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
  '    {%- elif message.role == "tool" %}\n'
  '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
  "            {{- '<|im_start|>user' }}\n        {%- endif %}\n"
  "        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n"
  "        {{- '\\n</tool_response>' }}\n"
  '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
  "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
  "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

# A template whose output depends on trim_blocks and lstrip_blocks (no `-` markers), and that
# uses bos_token, eos_token, raise_exception, tojson, an extra variable and a generation block.
LLAMA_TEMPLATE = """{{ bos_token }}
{% if meta is defined %}
  {{ meta | tojson }}
{% endif %}
{% for message in messages %}
  {% if message['role'] not in ['system', 'user', 'assistant'] %}
    {{ raise_exception('unsupported role: ' + message['role']) }}
  {% endif %}
[{{ message['role'] | upper }}]
  {% if message['role'] == 'assistant' %}
{% generation %}{{ message['content'] | trim }}{{ eos_token }}{% endgeneration %}
  {% else %}
{{ message['content'] | trim }}{{ eos_token }}
  {% endif %}
{% endfor %}
{% if add_generation_prompt %}
[ASSISTANT]
{% endif %}
"""

CONVERSATION = [
  {"role": "system", "content": "You are a careful mathematician."},
  {"role": "user", "content": "What is 12 + 30?"},
  {"role": "assistant", "content": "The answer is 42."},
  {"role": "user", "content": "Et en français, s'il te plaît? 🙂"},
]

TEXTS = [
  "",
  "The quick brown fox.",
  "  leading and trailing spaces  ",
  "Les élèves: déjà vu 数学 🙂\n\ttabs",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
  "</s>text<s> with llama specials",
]


def train_bpe(special_tokens: list[str]) -> tokenizers.Tokenizer:
  """A byte-level BPE tokenizer with a 400-entry vocabulary trained on `CORPUS`."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=special_tokens,
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(CORPUS, trainer)
  return tok


def write_checkpoint(
  path: pathlib.Path,
  tok: tokenizers.Tokenizer,
  config: dict | None,
  *,
  generation_config: dict | None = None,
  template_file: str | None = None,
) -> pathlib.Path:
  """Writes `tok` and the optional side files into `path`; returns `path`."""
  path.mkdir(parents=True, exist_ok=True)
  tok.save(str(path / "tokenizer.json"))
  if config is not None:
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
  if generation_config is not None:
    (path / "generation_config.json").write_text(json.dumps(generation_config), encoding="utf-8")
  if template_file is not None:
    (path / "chat_template.jinja").write_text(template_file, encoding="utf-8")
  return path


QWEN_CONFIG = {
  "add_bos_token": False,
  "add_prefix_space": False,
  "bos_token": None,
  "chat_template": QWEN_TEMPLATE,
  "clean_up_tokenization_spaces": False,
  "eos_token": "<|im_end|>",
  "errors": "replace",
  "model_max_length": 131072,
  "pad_token": "<|endoftext|>",
  "split_special_tokens": False,
  "tokenizer_class": "PreTrainedTokenizerFast",
  "unk_token": None,
}

LLAMA_CONFIG = {
  "add_bos_token": True,
  "bos_token": "<s>",
  "eos_token": {  # The serialised AddedToken form older Llama checkpoints use.
    "__type": "AddedToken",
    "content": "</s>",
    "lstrip": False,
    "normalized": False,
    "rstrip": False,
    "single_word": False,
  },
  "clean_up_tokenization_spaces": False,
  # Overridden by chat_template.jinja, as in transformers.
  "chat_template": "{{ 'this template must not be used' }}",
  "tokenizer_class": "PreTrainedTokenizerFast",
}


def hf_reference(path: pathlib.Path):
  """`transformers.AutoTokenizer` of the checkpoint at `path` (skips without transformers)."""
  transformers = pytest.importorskip(
    "transformers", reason="transformers is the reference implementation for these checks"
  )
  return transformers.AutoTokenizer.from_pretrained(str(path))
