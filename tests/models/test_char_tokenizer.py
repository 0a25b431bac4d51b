"""Tests for grpojax/models/char_tokenizer.py."""

import hypothesis
import hypothesis.strategies as st
import pytest

from grpojax.models import char_tokenizer as char_lib
from grpojax.models import tokenizers as tok_lib


def test_char_tokenizer_ids_by_hand():
  tok = char_lib.CharTokenizer("0123456789+=")
  assert isinstance(tok, tok_lib.Tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_ids) == (0, 1, (2,))
  assert tok.vocab_size == 3 + 12
  # '0' -> 3, '1' -> 4, '+' -> 3 + 10 = 13, '=' -> 14.
  assert tok.encode("1+0=") == [4, 13, 3, 14]
  assert tok.encode("1+0=", add_special_tokens=True) == [1, 4, 13, 3, 14]
  assert tok.decode([1, 4, 13, 3, 14, 2, 0, 0]) == "1+0="
  assert tok.decode([1, 4, 2, 0], skip_special_tokens=False) == "<bos>1<eos><pad>"


@hypothesis.given(text=st.text(alphabet=char_lib.ARITHMETIC_ALPHABET, max_size=64))
def test_char_tokenizer_round_trip(text):
  tok = char_lib.CharTokenizer(char_lib.ARITHMETIC_ALPHABET)
  ids = tok.encode(text)
  assert len(ids) == len(text)
  assert all(3 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text
  assert tok.decode([tok.bos_id, *ids, *tok.eos_ids, tok.pad_id]) == text


def test_char_tokenizer_unknown_character_names_it_and_its_position():
  tok = char_lib.CharTokenizer("0123456789+")
  with pytest.raises(ValueError, match="character 'x' at position 3"):
    tok.encode("12+x5")


def test_char_tokenizer_decode_rejects_out_of_range_ids():
  tok = char_lib.CharTokenizer("ab")
  with pytest.raises(ValueError, match="id 5 at position 1"):
    tok.decode([3, 5])


@pytest.mark.parametrize("alphabet", ["", "abca"])
def test_char_tokenizer_rejects_bad_alphabets(alphabet):
  with pytest.raises(ValueError):
    char_lib.CharTokenizer(alphabet)


def test_char_tokenizer_separator_must_be_in_alphabet():
  with pytest.raises(ValueError, match="turn_separator"):
    char_lib.CharTokenizer("0123456789", turn_separator="\n")


def test_char_tokenizer_chat_template():
  tok = char_lib.CharTokenizer(char_lib.ARITHMETIC_ALPHABET, turn_separator="\n")
  messages = [
    {"role": "system", "content": "add"},
    {"role": "user", "content": "12+30="},
  ]
  assert tok.apply_chat_template(messages) == "add\n12+30=\n"
  assert tok.apply_chat_template(messages, add_generation_prompt=False) == "add\n12+30="
  assert tok.apply_chat_template(messages, enable_thinking=False) == "add\n12+30=\n"
  plain = char_lib.CharTokenizer("0123456789+=")
  assert plain.apply_chat_template([{"role": "user", "content": "1+2="}]) == "1+2="
  with pytest.raises(ValueError, match="empty conversation"):
    plain.apply_chat_template([])


def test_char_tokenizer_is_hashable_and_compares_by_value():
  assert char_lib.CharTokenizer("ab") == char_lib.CharTokenizer("ab")
  assert hash(char_lib.CharTokenizer("ab")) == hash(char_lib.CharTokenizer("ab"))
  assert char_lib.CharTokenizer("ab") != char_lib.CharTokenizer("ba")
