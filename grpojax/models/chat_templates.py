"""Chat templates compiled the way `transformers` compiles them.

A sandboxed, immutable jinja2 environment with `trim_blocks` and `lstrip_blocks`, the
`loopcontrols` extension, a no-op `{% generation %}` block, the `raise_exception` and
`strftime_now` globals and a `tojson` filter that leaves non-ASCII characters unescaped.
"""

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

Message = Mapping[str, Any]


class _GenerationBlock(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}`, rendered as its body.

  `transformers` uses this block to find assistant tokens; templates that contain it must still
  compile here, and their text is the body's.
  """

  tags = {"generation"}

  def parse(self, parser: Any) -> jinja2.nodes.Node:
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

  def _render(self, caller: Any) -> str:
    return caller()


def _raise_exception(message: str) -> None:
  raise jinja2.exceptions.TemplateError(message)


def _tojson(
  value: Any,
  ensure_ascii: bool = False,
  indent: int | None = None,
  separators: tuple[str, str] | None = None,
  sort_keys: bool = False,
) -> str:
  # Jinja's own `tojson` HTML-escapes its output; chat templates expect plain JSON.
  return json.dumps(
    value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
  )


def _strftime_now(format_string: str) -> str:
  return datetime.datetime.now().strftime(format_string)


def compile_chat_template(source: str) -> jinja2.Template:
  """Compiles a chat template in the environment `transformers` uses.

  Args:
    source: the jinja2 template text.

  Returns:
    The compiled template; render it with `messages`, `add_generation_prompt` and the special
    token strings.

  Raises:
    jinja2.TemplateSyntaxError: the template does not parse.
  """
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
  )
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  return env.from_string(source)


def plain_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
  """A conversation as the plain dicts a template renders.

  As in `transformers`, keys whose value is None are dropped: templates test `is defined`.

  Args:
    messages: `{"role": ..., "content": ...}` mappings.

  Returns:
    One dict per message.

  Raises:
    TypeError: `messages` is not a sequence of mappings.
    ValueError: `messages` is empty.
  """
  if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
    raise TypeError(f"messages must be a sequence of mappings, got {type(messages).__name__}")
  if not messages:
    raise ValueError("cannot apply a chat template to an empty conversation")
  plain = []
  for i, message in enumerate(messages):
    if not isinstance(message, Mapping):
      raise TypeError(f"message {i} must be a mapping, got {type(message).__name__}")
    plain.append({key: value for key, value in message.items() if value is not None})
  return plain
