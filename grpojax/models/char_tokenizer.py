"""A character tokenizer for the built-in toy tasks: one token per character of a fixed alphabet.

It satisfies `grpojax.models.tokenizers.Tokenizer` structurally, so prompt building, sampling and
reward decoding treat it as they treat a real checkpoint's tokenizer.
"""

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import tokenizers

from grpojax.models import chat_templates as template_lib

# Digits, arithmetic operators, brackets, punctuation, space, newline and lower-case letters:
# enough for the built-in arithmetic and counting tasks and their short answers.
ARITHMETIC_ALPHABET = "0123456789+-*/=()<>.,:?! \nabcdefghijklmnopqrstuvwxyz"


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
  """One token per character of a fixed alphabet, for the built-in toy tasks.

  Ids: `<pad>` = 0, `<bos>` = 1, `<eos>` = 2, then the alphabet's characters in order from 3.
  The chat template equivalent joins the message contents with `turn_separator` and, with a
  generation prompt, appends one more separator; roles are not rendered.

  Attributes:
    alphabet: the characters, each once.
    turn_separator: text between turns (and before the answer); its characters must be in the
      alphabet.
  """

  alphabet: str
  turn_separator: str = ""

  PAD: ClassVar[str] = "<pad>"
  BOS: ClassVar[str] = "<bos>"
  EOS: ClassVar[str] = "<eos>"

  def __post_init__(self):
    if not isinstance(self.alphabet, str) or not self.alphabet:
      raise ValueError("alphabet must be a non-empty string")
    seen = set()
    for i, ch in enumerate(self.alphabet):
      if ch in seen:
        raise ValueError(f"alphabet repeats {ch!r} (position {i})")
      seen.add(ch)
    missing = sorted(set(self.turn_separator) - seen)
    if missing:
      raise ValueError(f"turn_separator characters {missing} are not in the alphabet")
    # Frozen dataclass: derived tables are set once here.
    object.__setattr__(self, "_char_to_id", {ch: i + 3 for i, ch in enumerate(self.alphabet)})

  @property
  def vocab_size(self) -> int:
    """Three special tokens plus one per alphabet character."""
    return 3 + len(self.alphabet)

  @property
  def pad_id(self) -> int:
    """Always 0."""
    return 0

  @property
  def bos_id(self) -> int:
    """Always 1."""
    return 1

  @property
  def eos_ids(self) -> tuple[int, ...]:
    """Always `(2,)`."""
    return (2,)

  def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
    """Maps each character to its id.

    Args:
      text: characters from the alphabet (`"<eos>"` in text is five characters, not a token).
      add_special_tokens: prepend `<bos>`.

    Returns:
      The ids.

    Raises:
      ValueError: a character is not in the alphabet; the message names it and its position.
    """
    table = self._char_to_id
    ids = [self.bos_id] if add_special_tokens else []
    for i, ch in enumerate(text):
      token_id = table.get(ch)
      if token_id is None:
        raise ValueError(
          f"character {ch!r} at position {i} of {text!r} is not in the alphabet {self.alphabet!r}"
        )
      ids.append(token_id)
    return ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Maps ids back to characters.

    Args:
      ids: token ids.
      skip_special_tokens: drop `<pad>`, `<bos>` and `<eos>`; otherwise they are written as
        those strings.

    Returns:
      The text.

    Raises:
      ValueError: an id is outside `[0, vocab_size)`.
    """
    specials = (self.PAD, self.BOS, self.EOS)
    out = []
    for position, token_id in enumerate(ids):
      token_id = int(token_id)
      if not 0 <= token_id < self.vocab_size:
        raise ValueError(
          f"id {token_id} at position {position} is outside the vocabulary [0, {self.vocab_size})"
        )
      if token_id < 3:
        if not skip_special_tokens:
          out.append(specials[token_id])
      else:
        out.append(self.alphabet[token_id - 3])
    return "".join(out)

  def apply_chat_template(
    self,
    messages: Sequence[template_lib.Message],
    add_generation_prompt: bool = True,
    **kwargs: Any,
  ) -> str:
    """Joins the message contents with `turn_separator`.

    Args:
      messages: `{"role": ..., "content": str}` mappings; roles are not rendered.
      add_generation_prompt: append one more `turn_separator` before the answer.
      **kwargs: accepted so call sites written for `HFTokenizer` work; ignored.

    Returns:
      The prompt string.

    Raises:
      ValueError: `messages` is empty.
      TypeError: a message has no string `content`.
    """
    del kwargs  # No template variables to fill.
    contents = []
    for i, message in enumerate(template_lib.plain_messages(messages)):
      content = message.get("content")
      if not isinstance(content, str):
        raise TypeError(f"message {i} needs a string 'content', got {content!r}")
      contents.append(content)
    prompt = self.turn_separator.join(contents)
    return prompt + self.turn_separator if add_generation_prompt else prompt


def hf_files(tok: CharTokenizer) -> dict[str, bytes]:
  """Hugging Face tokenizer files equivalent to `tok`, for an exported policy directory.

  `tokenizer.json` is a `tokenizers` WordLevel model over the same ids (every character its own
  pre-token, a Fuse decoder joining them back, `<bos>` prepended when special tokens are added,
  a character outside the alphabet an error as in `encode`); `tokenizer_config.json` names the
  special tokens and carries a chat template that renders what `apply_chat_template` does;
  `generation_config.json` holds the special ids. `transformers.AutoTokenizer` reading them
  encodes `text` to `[bos_id, *tok.encode(text)]`, the prompt ids a run feeds the policy.

  Returns:
    File name -> contents.
  """
  vocab = {tok.PAD: tok.pad_id, tok.BOS: tok.bos_id, tok.EOS: tok.eos_ids[0]}
  vocab.update({ch: i + 3 for i, ch in enumerate(tok.alphabet)})
  special = lambda content: {
    "id": vocab[content],
    "content": content,
    "single_word": False,
    "lstrip": False,
    "rstrip": False,
    "normalized": False,
    "special": True,
  }
  bos = {"SpecialToken": {"id": tok.BOS, "type_id": 0}}
  sequence = lambda name: {"Sequence": {"id": name, "type_id": 0}}
  backend = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [special(t) for t in (tok.PAD, tok.BOS, tok.EOS)],
    "normalizer": None,
    # Every character is its own pre-token.
    "pre_tokenizer": {
      "type": "Split",
      "pattern": {"Regex": r"[\s\S]"},
      "behavior": "Isolated",
      "invert": False,
    },
    "post_processor": {
      "type": "TemplateProcessing",
      "single": [bos, sequence("A")],
      "pair": [bos, sequence("A"), sequence("B")],
      "special_tokens": {tok.BOS: {"id": tok.BOS, "ids": [tok.bos_id], "tokens": [tok.BOS]}},
    },
    "decoder": {"type": "Fuse"},
    # The unknown token is deliberately absent from the vocabulary: unknown characters fail.
    "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
  }
  backend_json = json.dumps(backend, indent=2, ensure_ascii=False)
  tokenizers.Tokenizer.from_str(backend_json)  # the library accepts it (raises otherwise)
  # json.dumps gives a double-quoted literal with backslash escapes, which jinja reads the same.
  sep = json.dumps(tok.turn_separator)
  template = (
    "{% for m in messages %}{% if not loop.first %}{{ " + sep + " }}{% endif %}"
    "{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}{{ " + sep + " }}{% endif %}"
  )
  config = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": tok.BOS,
    "eos_token": tok.EOS,
    "pad_token": tok.PAD,
    "add_bos_token": True,
    "chat_template": template,
  }
  generation = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_ids[0], "pad_token_id": 0}
  dump = lambda obj: (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
  return {
    "tokenizer.json": (backend_json + "\n").encode("utf-8"),
    "tokenizer_config.json": dump(config),
    "generation_config.json": dump(generation),
  }
