"""Tokenizers: one small duck-typed interface and a Hugging Face tokenizer with its loader.

Everything downstream of text (prompt building, sampling stop conditions, reward decoding) talks
to a tokenizer through the `Tokenizer` protocol only, so a real checkpoint's tokenizer and the
built-in `char_tokenizer.CharTokenizer` of the toy tasks go through the same code path.

`HFTokenizer` reads a local Hugging Face tokenizer directory without `transformers`:

* `tokenizer.json` through the `tokenizers` package (the Rust fast tokenizer);
* `tokenizer_config.json` (optional) for the named special tokens, `add_bos_token` and
  `chat_template`; `special_tokens_map.json` fills in special tokens the config lacks;
* `chat_template.jinja` (optional), which takes priority over the config's `chat_template`, as
  in `transformers`;
* `generation_config.json` (optional) for extra end-of-sequence ids (`eos_token_id`, an int or a
  list).

Chat templates are rendered the way `transformers` renders them (`chat_templates`).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import jinja2
import tokenizers

from grpojax.models import chat_templates as template_lib

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
GENERATION_CONFIG_FILE = "generation_config.json"

# The named special tokens a Hugging Face tokenizer config may set; all of them are visible to
# chat templates, as `transformers` passes its `special_tokens_map` to the template.
_NAMED_SPECIAL_TOKENS = (
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
)

Message = template_lib.Message


@runtime_checkable
class Tokenizer(Protocol):
  """What the rest of grpojax needs from a tokenizer.

  Implementations need not inherit from this class; `HFTokenizer` and `CharTokenizer` both
  satisfy it structurally.
  """

  @property
  def vocab_size(self) -> int:
    """Number of token ids, special tokens included; every id is in `[0, vocab_size)`."""
    ...

  @property
  def pad_id(self) -> int:
    """Id used to pad sequences (masked out everywhere it matters)."""
    ...

  @property
  def eos_ids(self) -> tuple[int, ...]:
    """Ids any of which ends a generated sequence; never empty."""
    ...

  @property
  def bos_id(self) -> int | None:
    """Beginning-of-sequence id, or None when the tokenizer has none."""
    ...

  def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
    """Maps text to token ids."""
    ...

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Maps token ids back to text."""
    ...

  def apply_chat_template(
    self, messages: Sequence[Message], add_generation_prompt: bool = True, **kwargs: Any
  ) -> str:
    """Renders a conversation to the prompt string the model was trained on."""
    ...


def _read_json(path: pathlib.Path, *, required: bool) -> dict[str, Any] | None:
  """Reads a JSON object from `path`; None if absent and not required."""
  if not path.is_file():
    if required:
      raise FileNotFoundError(f"tokenizer file not found: {path}")
    return None
  try:
    with path.open(encoding="utf-8") as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"malformed JSON in {path}: {e}") from e
  if not isinstance(data, dict):
    raise ValueError(f"malformed {path}: expected a JSON object, got {type(data).__name__}")
  return data


def _token_string(value: Any, *, name: str, source: pathlib.Path) -> str | None:
  """A special token entry, either a string or a serialised AddedToken `{"content": ...}`."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, Mapping) and isinstance(value.get("content"), str):
    return value["content"]
  raise ValueError(
    f"malformed {source}: {name} must be a string or {{'content': str}}, got {value!r}"
  )


def _eos_ids_from_generation_config(config: Mapping[str, Any], source: pathlib.Path) -> list[int]:
  value = config.get("eos_token_id")
  if value is None:
    return []
  values = value if isinstance(value, list) else [value]
  for v in values:
    if not isinstance(v, int) or isinstance(v, bool):
      raise ValueError(
        f"malformed {source}: eos_token_id must be an int or a list of ints, got {value!r}"
      )
  return values


def _chat_templates_from_config(value: Any, source: pathlib.Path) -> dict[str, str]:
  """The config's `chat_template`: a string, or a list of `{"name", "template"}` entries."""
  if value is None:
    return {}
  if isinstance(value, str):
    return {"default": value}
  if isinstance(value, list) and all(
    isinstance(t, Mapping) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)
    for t in value
  ):
    return {t["name"]: t["template"] for t in value}
  raise ValueError(
    f"malformed {source}: chat_template must be a string or a list of "
    "{'name', 'template'} entries"
  )


class HFTokenizer:
  """A Hugging Face fast tokenizer read from its files, without `transformers`.

  Attributes:
    special_tokens: the named special token strings (`bos_token`, `eos_token`, ...) that are set.
    add_bos_token: whether `encode(..., add_special_tokens=True)` guarantees a leading bos.
  """

  def __init__(
    self,
    tokenizer: tokenizers.Tokenizer,
    *,
    special_tokens: Mapping[str, str | None] | None = None,
    extra_eos_ids: Sequence[int] = (),
    add_bos_token: bool = False,
    chat_templates: Mapping[str, str] | None = None,
    source: str = "<in-memory tokenizer>",
  ):
    """Wraps an already-built `tokenizers.Tokenizer`; see `from_pretrained` to load files.

    Args:
      tokenizer: the fast tokenizer.
      special_tokens: named special token strings, keys from `bos_token`, `eos_token`,
        `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token`; None values are unset.
      extra_eos_ids: further end-of-sequence ids, e.g. from `generation_config.json`.
      add_bos_token: prepend bos in `encode(..., add_special_tokens=True)` when the
        tokenizer's post-processor has not already done so.
      chat_templates: templates by name; `default` is used, `tool_use` when tools are passed.
      source: where the tokenizer came from, for error messages.

    Raises:
      ValueError: a special token is not in the vocabulary, an eos id is out of range, there is
        no end-of-sequence id at all, or a chat template does not parse.
    """
    self._tokenizer = tokenizer
    self._source = source
    self.add_bos_token = bool(add_bos_token)
    special_tokens = dict(special_tokens or {})
    unknown = set(special_tokens) - set(_NAMED_SPECIAL_TOKENS)
    if unknown:
      raise ValueError(f"{source}: unknown special token names {sorted(unknown)}")
    self.special_tokens = {k: v for k, v in special_tokens.items() if v is not None}
    self._vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    ids = {name: self._required_id(token, name) for name, token in self.special_tokens.items()}
    self._bos_id = ids.get("bos_token")
    eos_ids = [ids["eos_token"]] if "eos_token" in ids else []
    for i in extra_eos_ids:
      if not 0 <= i < self._vocab_size:
        raise ValueError(f"{source}: eos id {i} is outside the vocabulary [0, {self._vocab_size})")
      if i not in eos_ids:
        eos_ids.append(int(i))
    if not eos_ids:
      raise ValueError(
        f"{source}: no end-of-sequence token; set eos_token in {TOKENIZER_CONFIG_FILE} or "
        f"eos_token_id in {GENERATION_CONFIG_FILE}"
      )
    self._eos_ids = tuple(eos_ids)
    # Checkpoints without a pad token (Llama 3, ...) pad with eos; padding is always masked.
    self._pad_id = ids.get("pad_token", self._eos_ids[0])

    self._chat_templates = {}
    for name, template in (chat_templates or {}).items():
      try:
        self._chat_templates[name] = template_lib.compile_chat_template(template)
      except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"{source}: chat template {name!r} does not parse: {e}") from e

  def _required_id(self, token: str, name: str) -> int:
    token_id = self._tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"{self._source}: {name} {token!r} is not in the vocabulary")
    return token_id

  @classmethod
  def from_pretrained(cls, path: str | pathlib.Path) -> HFTokenizer:
    """Loads a tokenizer from a local Hugging Face checkpoint directory.

    Args:
      path: directory holding `tokenizer.json` and optionally `tokenizer_config.json`,
        `special_tokens_map.json`, `chat_template.jinja` and `generation_config.json`.

    Returns:
      The tokenizer.

    Raises:
      FileNotFoundError: the directory or its `tokenizer.json` is missing; the message names it.
      ValueError: a file is malformed; the message names it.
    """
    root = pathlib.Path(path)
    if not root.is_dir():
      raise FileNotFoundError(f"tokenizer directory not found: {root}")
    tokenizer_path = root / TOKENIZER_FILE
    if not tokenizer_path.is_file():
      raise FileNotFoundError(f"tokenizer file not found: {tokenizer_path}")
    try:
      tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
    except Exception as e:  # The Rust side raises a bare Exception for any parse error.
      raise ValueError(f"malformed {tokenizer_path}: {e}") from e

    config_path = root / TOKENIZER_CONFIG_FILE
    config = _read_json(config_path, required=False) or {}
    special_tokens = {
      name: _token_string(config.get(name), name=name, source=config_path)
      for name in _NAMED_SPECIAL_TOKENS
    }
    map_path = root / SPECIAL_TOKENS_MAP_FILE
    special_map = _read_json(map_path, required=False) or {}
    for name in _NAMED_SPECIAL_TOKENS:
      if special_tokens[name] is None and name not in config:
        special_tokens[name] = _token_string(special_map.get(name), name=name, source=map_path)

    add_bos_token = config.get("add_bos_token", False)
    if not isinstance(add_bos_token, bool):
      raise ValueError(
        f"malformed {config_path}: add_bos_token must be a bool, got {add_bos_token!r}"
      )

    # As in `transformers`, a separate template file wins over the config's entry.
    template_path = root / CHAT_TEMPLATE_FILE
    if template_path.is_file():
      chat_templates = {"default": template_path.read_text(encoding="utf-8")}
    else:
      chat_templates = _chat_templates_from_config(config.get("chat_template"), config_path)

    generation_path = root / GENERATION_CONFIG_FILE
    generation_config = _read_json(generation_path, required=False) or {}
    extra_eos_ids = _eos_ids_from_generation_config(generation_config, generation_path)

    return cls(
      tokenizer,
      special_tokens=special_tokens,
      extra_eos_ids=extra_eos_ids,
      add_bos_token=add_bos_token,
      chat_templates=chat_templates,
      source=str(root),
    )

  @property
  def vocab_size(self) -> int:
    """Number of ids, added tokens included (the model's embedding table may be larger)."""
    return self._vocab_size

  @property
  def pad_id(self) -> int:
    """The pad token's id, or the first eos id when the checkpoint has no pad token."""
    return self._pad_id

  @property
  def eos_ids(self) -> tuple[int, ...]:
    """The config's eos token first, then `generation_config.json`'s other eos ids."""
    return self._eos_ids

  @property
  def bos_id(self) -> int | None:
    """The bos token's id, or None (Qwen2 has none)."""
    return self._bos_id

  @property
  def backend(self) -> tokenizers.Tokenizer:
    """The underlying `tokenizers.Tokenizer`, e.g. for batched encoding."""
    return self._tokenizer

  def token_to_id(self, token: str) -> int | None:
    """The id of a token string (e.g. `"<|im_end|>"`), or None if it is not in the vocabulary."""
    return self._tokenizer.token_to_id(token)

  def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
    """Maps text to ids.

    Special token strings in `text` map to their ids, so a rendered chat template encodes as
    the model expects.

    Args:
      text: the text.
      add_special_tokens: run the `tokenizer.json` post-processor (which may add bos/eos), and
        prepend bos if `add_bos_token` is set and it is still missing. Off by default because
        chat templates already write their own special tokens.

    Returns:
      The token ids.
    """
    ids = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
    if (
      add_special_tokens
      and self.add_bos_token
      and self._bos_id is not None
      and ids[:1] != [self._bos_id]
    ):
      ids = [self._bos_id, *ids]
    return ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Maps ids back to text.

    Args:
      ids: token ids (any integer sequence, e.g. a NumPy row).
      skip_special_tokens: drop tokens marked special in `tokenizer.json`.

    Returns:
      The text.
    """
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def apply_chat_template(
    self, messages: Sequence[Message], add_generation_prompt: bool = True, **kwargs: Any
  ) -> str:
    """Renders a conversation with the checkpoint's chat template, as `transformers` does.

    Args:
      messages: `{"role": ..., "content": ...}` mappings; keys whose value is None are dropped.
      add_generation_prompt: append the header that starts the assistant's turn.
      **kwargs: further template variables (`tools`, `enable_thinking`, ...); they override
        the special token strings of the same name.

    Returns:
      The prompt string (encode it with `encode`, without special tokens).

    Raises:
      ValueError: the tokenizer has no chat template, or `messages` is empty.
      jinja2.TemplateError: the template rejected the conversation (`raise_exception`).
    """
    if not self._chat_templates:
      raise ValueError(
        f"{self._source} has no chat template: add `chat_template` to {TOKENIZER_CONFIG_FILE} or "
        f"a {CHAT_TEMPLATE_FILE} file, or build prompts without apply_chat_template"
      )
    tools = kwargs.get("tools")
    if tools and "tool_use" in self._chat_templates:
      template = self._chat_templates["tool_use"]
    elif "default" in self._chat_templates:
      template = self._chat_templates["default"]
    else:
      raise ValueError(
        f"{self._source}: no 'default' chat template among {sorted(self._chat_templates)}"
      )
    variables = {
      **self.special_tokens,
      "tools": None,
      "documents": None,
      **kwargs,
      "messages": template_lib.plain_messages(messages),
      "add_generation_prompt": add_generation_prompt,
    }
    return template.render(**variables)


def load_tokenizer(path: str | pathlib.Path) -> HFTokenizer:
  """Loads the Hugging Face tokenizer in a local checkpoint directory.

  Args:
    path: the directory; see `HFTokenizer.from_pretrained`.

  Returns:
    The tokenizer.

  Raises:
    FileNotFoundError: a required file is missing; the message names it.
    ValueError: a file is malformed; the message names it.
  """
  return HFTokenizer.from_pretrained(path)
