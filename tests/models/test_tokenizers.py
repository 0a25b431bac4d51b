"""Tests for grpojax/models/tokenizers.py.

The Hugging Face tests train a tiny byte-level BPE tokenizer with the `tokenizers` library,
write it out as a checkpoint directory and compare `HFTokenizer` with `transformers` loading the
same directory (the independent reference for encoding, decoding and chat template rendering).
"""

import json
import pathlib

import hypothesis
import hypothesis.strategies as st
import jinja2
import pytest
import tokenizers
import tokenizers.decoders
import tokenizers.models
import tokenizers.pre_tokenizers
import tokenizers.processors
import tokenizers.trainers

from grpojax.models import tokenizers as tok_lib

_CORPUS = [
  "The quick brown fox jumps over the lazy dog.",
  "What is 12 + 30? The answer is 42.",
  "You are a helpful assistant. Please reason step by step.",
  "Les élèves ont répondu: déjà vu, naïve café.",
  "数学很有趣 and emojis 🙂 too",
  "def add(a, b):\n    return a + b\n",
]

# Qwen2.5-Instruct's chat template, verbatim (tools, tool calls, tool responses, tojson).
_QWEN_TEMPLATE = (
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
_LLAMA_TEMPLATE = """{{ bos_token }}
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

_CONVERSATION = [
  {"role": "system", "content": "You are a careful mathematician."},
  {"role": "user", "content": "What is 12 + 30?"},
  {"role": "assistant", "content": "The answer is 42."},
  {"role": "user", "content": "Et en français, s'il te plaît? 🙂"},
]

_TEXTS = [
  "",
  "The quick brown fox.",
  "  leading and trailing spaces  ",
  "Les élèves: déjà vu 数学 🙂\n\ttabs",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
  "</s>text<s> with llama specials",
]


def _train_bpe(special_tokens: list[str]) -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=special_tokens,
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(_CORPUS, trainer)
  return tok


def _write_checkpoint(
  path: pathlib.Path,
  tok: tokenizers.Tokenizer,
  config: dict | None,
  *,
  generation_config: dict | None = None,
  template_file: str | None = None,
) -> pathlib.Path:
  path.mkdir(parents=True, exist_ok=True)
  tok.save(str(path / "tokenizer.json"))
  if config is not None:
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
  if generation_config is not None:
    (path / "generation_config.json").write_text(json.dumps(generation_config), encoding="utf-8")
  if template_file is not None:
    (path / "chat_template.jinja").write_text(template_file, encoding="utf-8")
  return path


_QWEN_CONFIG = {
  "add_bos_token": False,
  "add_prefix_space": False,
  "bos_token": None,
  "chat_template": _QWEN_TEMPLATE,
  "clean_up_tokenization_spaces": False,
  "eos_token": "<|im_end|>",
  "errors": "replace",
  "model_max_length": 131072,
  "pad_token": "<|endoftext|>",
  "split_special_tokens": False,
  "tokenizer_class": "PreTrainedTokenizerFast",
  "unk_token": None,
}

_LLAMA_CONFIG = {
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


@pytest.fixture(scope="module")
def qwen_bpe() -> tokenizers.Tokenizer:
  return _train_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])


@pytest.fixture(scope="module")
def llama_bpe() -> tokenizers.Tokenizer:
  tok = _train_bpe(["<s>", "</s>"])
  bos_id = tok.token_to_id("<s>")
  tok.post_processor = tokenizers.processors.TemplateProcessing(
    single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
  )
  return tok


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, qwen_bpe) -> pathlib.Path:
  im_end, endoftext = qwen_bpe.token_to_id("<|im_end|>"), qwen_bpe.token_to_id("<|endoftext|>")
  return _write_checkpoint(
    tmp_path_factory.mktemp("qwen"),
    qwen_bpe,
    _QWEN_CONFIG,
    generation_config={"bos_token_id": endoftext, "eos_token_id": [im_end, endoftext]},
  )


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, llama_bpe) -> pathlib.Path:
  return _write_checkpoint(
    tmp_path_factory.mktemp("llama"),
    llama_bpe,
    _LLAMA_CONFIG,
    generation_config={"eos_token_id": llama_bpe.token_to_id("</s>")},
    template_file=_LLAMA_TEMPLATE,
  )


def _hf_reference(path: pathlib.Path):
  transformers = pytest.importorskip(
    "transformers", reason="transformers is the reference implementation for these checks"
  )
  return transformers.AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def qwen_pair(qwen_dir):
  return tok_lib.load_tokenizer(qwen_dir), _hf_reference(qwen_dir)


@pytest.fixture(scope="module")
def llama_pair(llama_dir):
  return tok_lib.load_tokenizer(llama_dir), _hf_reference(llama_dir)


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
@pytest.mark.parametrize("text", _TEXTS)
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


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize(
  "messages",
  [_CONVERSATION, _CONVERSATION[1:]],  # With a system turn, and with the default system turn.
  ids=["system", "default_system"],
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
    _CONVERSATION, tokenize=False, add_generation_prompt=add_generation_prompt, meta=meta
  )
  got = ours.apply_chat_template(
    _CONVERSATION, add_generation_prompt=add_generation_prompt, meta=meta
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
  path = _write_checkpoint(tmp_path, qwen_bpe, {**_QWEN_CONFIG, "chat_template": template})
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]
  ours, ref = tok_lib.load_tokenizer(path), _hf_reference(path)
  expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
  assert ours.apply_chat_template(messages, add_generation_prompt=False) == expected
  assert expected == "user:True;assistant:False;"


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
  config = {k: v for k, v in _QWEN_CONFIG.items() if k != "eos_token"}
  endoftext = qwen_bpe.token_to_id("<|endoftext|>")
  path = _write_checkpoint(
    tmp_path, qwen_bpe, config, generation_config={"eos_token_id": endoftext}
  )
  assert tok_lib.load_tokenizer(path).eos_ids == (endoftext,)


def test_no_eos_anywhere_is_an_error(tmp_path, qwen_bpe):
  config = {k: v for k, v in _QWEN_CONFIG.items() if k != "eos_token"}
  path = _write_checkpoint(tmp_path, qwen_bpe, config)
  with pytest.raises(ValueError, match="no end-of-sequence token"):
    tok_lib.load_tokenizer(path)


def test_chat_template_jinja_file_without_config_entry(tmp_path, qwen_bpe):
  config = {k: v for k, v in _QWEN_CONFIG.items() if k != "chat_template"}
  path = _write_checkpoint(tmp_path, qwen_bpe, config, template_file=_QWEN_TEMPLATE)
  tok = tok_lib.load_tokenizer(path)
  prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}])
  assert prompt == (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  )


def test_add_bos_token_prepends_bos_missing_from_post_processor(tmp_path, qwen_bpe):
  # qwen_bpe has no post-processor, so only add_bos_token can put bos in front.
  config = {**_QWEN_CONFIG, "bos_token": "<|endoftext|>", "add_bos_token": True}
  tok = tok_lib.load_tokenizer(_write_checkpoint(tmp_path, qwen_bpe, config))
  bos = qwen_bpe.token_to_id("<|endoftext|>")
  assert tok.encode("hi there", add_special_tokens=True) == [bos, *tok.encode("hi there")]
  assert tok.encode("<|endoftext|>hi", add_special_tokens=True) == tok.encode("<|endoftext|>hi")


def test_no_chat_template_is_a_clear_error(tmp_path, qwen_bpe):
  config = {k: v for k, v in _QWEN_CONFIG.items() if k != "chat_template"}
  tok = tok_lib.load_tokenizer(_write_checkpoint(tmp_path, qwen_bpe, config))
  with pytest.raises(ValueError, match="has no chat template"):
    tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_empty_conversation_is_an_error(qwen_dir):
  with pytest.raises(ValueError, match="empty conversation"):
    tok_lib.load_tokenizer(qwen_dir).apply_chat_template([])


def test_missing_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    tok_lib.load_tokenizer(tmp_path / "nowhere")


def test_missing_tokenizer_json_names_the_file(tmp_path):
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(_QWEN_CONFIG), encoding="utf-8")
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
  path = _write_checkpoint(tmp_path, qwen_bpe, _QWEN_CONFIG)
  (path / filename).write_text(content, encoding="utf-8")
  with pytest.raises(ValueError, match=f"malformed .*{filename}"):
    tok_lib.load_tokenizer(path)


def test_special_token_outside_vocabulary(tmp_path, qwen_bpe):
  config = {**_QWEN_CONFIG, "eos_token": "<|not_a_token|>"}
  with pytest.raises(ValueError, match="eos_token '<\\|not_a_token\\|>' is not in the vocabulary"):
    tok_lib.load_tokenizer(_write_checkpoint(tmp_path, qwen_bpe, config))


def test_eos_id_outside_vocabulary(tmp_path, qwen_bpe):
  path = _write_checkpoint(
    tmp_path, qwen_bpe, _QWEN_CONFIG, generation_config={"eos_token_id": 10**6}
  )
  with pytest.raises(ValueError, match="eos id 1000000 is outside the vocabulary"):
    tok_lib.load_tokenizer(path)


def test_malformed_chat_template(tmp_path, qwen_bpe):
  path = _write_checkpoint(tmp_path, qwen_bpe, _QWEN_CONFIG, template_file="{% if %}")
  with pytest.raises(ValueError, match="chat template 'default' does not parse"):
    tok_lib.load_tokenizer(path)


def test_special_tokens_map_fills_in_missing_tokens(tmp_path, qwen_bpe):
  config = {k: v for k, v in _QWEN_CONFIG.items() if k not in ("eos_token", "pad_token")}
  path = _write_checkpoint(tmp_path, qwen_bpe, config)
  (path / "special_tokens_map.json").write_text(
    json.dumps({"eos_token": "<|im_end|>", "pad_token": {"content": "<|endoftext|>"}}),
    encoding="utf-8",
  )
  tok = tok_lib.load_tokenizer(path)
  assert tok.eos_ids == (qwen_bpe.token_to_id("<|im_end|>"),)
  assert tok.pad_id == qwen_bpe.token_to_id("<|endoftext|>")


# ---------------------------------------------------------------------------------------------
# CharTokenizer.


def test_char_tokenizer_ids_by_hand():
  tok = tok_lib.CharTokenizer("0123456789+=")
  assert isinstance(tok, tok_lib.Tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_ids) == (0, 1, (2,))
  assert tok.vocab_size == 3 + 12
  # '0' -> 3, '1' -> 4, '+' -> 3 + 10 = 13, '=' -> 14.
  assert tok.encode("1+0=") == [4, 13, 3, 14]
  assert tok.encode("1+0=", add_special_tokens=True) == [1, 4, 13, 3, 14]
  assert tok.decode([1, 4, 13, 3, 14, 2, 0, 0]) == "1+0="
  assert tok.decode([1, 4, 2, 0], skip_special_tokens=False) == "<bos>1<eos><pad>"


@hypothesis.given(text=st.text(alphabet=tok_lib.ARITHMETIC_ALPHABET, max_size=64))
def test_char_tokenizer_round_trip(text):
  tok = tok_lib.CharTokenizer(tok_lib.ARITHMETIC_ALPHABET)
  ids = tok.encode(text)
  assert len(ids) == len(text)
  assert all(3 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text
  assert tok.decode([tok.bos_id, *ids, *tok.eos_ids, tok.pad_id]) == text


def test_char_tokenizer_unknown_character_names_it_and_its_position():
  tok = tok_lib.CharTokenizer("0123456789+")
  with pytest.raises(ValueError, match="character 'x' at position 3"):
    tok.encode("12+x5")


def test_char_tokenizer_decode_rejects_out_of_range_ids():
  tok = tok_lib.CharTokenizer("ab")
  with pytest.raises(ValueError, match="id 5 at position 1"):
    tok.decode([3, 5])


@pytest.mark.parametrize("alphabet", ["", "abca"])
def test_char_tokenizer_rejects_bad_alphabets(alphabet):
  with pytest.raises(ValueError):
    tok_lib.CharTokenizer(alphabet)


def test_char_tokenizer_separator_must_be_in_alphabet():
  with pytest.raises(ValueError, match="turn_separator"):
    tok_lib.CharTokenizer("0123456789", turn_separator="\n")


def test_char_tokenizer_chat_template():
  tok = tok_lib.CharTokenizer(tok_lib.ARITHMETIC_ALPHABET, turn_separator="\n")
  messages = [
    {"role": "system", "content": "add"},
    {"role": "user", "content": "12+30="},
  ]
  assert tok.apply_chat_template(messages) == "add\n12+30=\n"
  assert tok.apply_chat_template(messages, add_generation_prompt=False) == "add\n12+30="
  assert tok.apply_chat_template(messages, enable_thinking=False) == "add\n12+30=\n"
  plain = tok_lib.CharTokenizer("0123456789+=")
  assert plain.apply_chat_template([{"role": "user", "content": "1+2="}]) == "1+2="
  with pytest.raises(ValueError, match="empty conversation"):
    plain.apply_chat_template([])


def test_char_tokenizer_is_hashable_and_compares_by_value():
  assert tok_lib.CharTokenizer("ab") == tok_lib.CharTokenizer("ab")
  assert hash(tok_lib.CharTokenizer("ab")) == hash(tok_lib.CharTokenizer("ab"))
  assert tok_lib.CharTokenizer("ab") != tok_lib.CharTokenizer("ba")
