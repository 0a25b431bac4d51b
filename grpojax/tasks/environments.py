"""Multi-turn environments: host-side games and tools a policy talks to turn by turn.

An `Environment` is plain Python on the host:

```
env = task.make_env()
obs = env.reset(example)                  # text appended to the prompt ("" for none)
obs, reward, done = env.step("calc:23*4")  # one policy turn, without its stop token
```

A policy turn ends at a stop token: the turn-end marker `TURN_END` (a tool call or a move; the
environment replies and the policy continues) or EOS (the episode ends). An episode also ends
when the environment says `done`, at the task's turn limit, or when the token budget runs out.
The episode's scalar reward (`step.Batch.rewards`) is the sum of the rewards `step` returned
over its turns: a task gives a final-answer reward on the last turn and, optionally, shaping
rewards on earlier ones. An episode counts as correct when that sum reaches 1.

Built-in tasks (character-tokenizer alphabet, learnable by a tiny policy on a CPU):

- `calculator`: `"23*47="`; the policy may call `calc:23*47` (ending its turn with the marker),
  reads the reply `"1081\\n"` and answers `1081` (EOS); the reward is the numeric verifier's on
  the final answer.
- `guess`: `"g17:1-9?"`; the policy guesses a number, the environment replies `"higher\\n"` or
  `"lower\\n"`, reward 1 for finding the secret within the turn limit.

A user's task is a factory by import path (`config.env.name = "my_pkg.mod:make_env_task"`)
returning a `MultiTurnTask`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from grpojax.tasks import example as example_lib
from grpojax.tasks import verifiers

# The turn-end marker: one token of the character tokenizer. A policy turn that ends with it
# hands the turn to the environment; EOS ends the episode.
TURN_END = "\n"
BUILTIN_ENVS = ("calculator", "guess")
CALL_PREFIX = "calc:"
# The calculator evaluates at most this many operators over numbers of at most this many digits.
MAX_CALC_OPERATORS = 4
MAX_CALC_DIGITS = 9
_CALC_EXPRESSION = re.compile(r"\d+(?:[+\-*]\d+)*")


class Environment(Protocol):
  """A multi-turn environment: one instance per episode, used from one thread at a time."""

  def reset(self, example: example_lib.Example) -> str:
    """Starts an episode on `example`; returns an observation appended to the prompt (or "")."""

  def step(self, text: str) -> tuple[str, float, bool]:
    """Takes one policy turn (its text, without the stop token).

    Returns:
      (observation appended for the policy's next turn, this turn's reward, episode done).
    """


@dataclasses.dataclass(frozen=True)
class MultiTurnTask(example_lib.Task):
  """A task whose episodes are played against an environment.

  Attributes (beyond `Task`'s; its `reward_fn` scores a final answer alone):
    make_env: `() -> Environment`, a fresh environment per episode.
    max_turns: the most policy turns per episode.
    transcript: `example -> ((policy text, observation), ...)`, a reference episode for the
      supervised warm start. A policy text ending in `TURN_END` ends its turn; the last one ends
      the episode (EOS is appended when it does not end in `TURN_END`). The last observation is
      not part of the episode.
  """

  make_env: Callable[[], Environment]
  max_turns: int
  transcript: Callable[[example_lib.Example], tuple[tuple[str, str], ...]]


def play(env: Environment, example: example_lib.Example, turns: Sequence[str]) -> tuple:
  """Plays fixed policy turns (texts without stop tokens) against `env`, without a model.

  Returns:
    (observations, total reward, done after the last turn played), stopping at `done`.
  """
  observations, total, done = [env.reset(example)], 0.0, False
  for text in turns:
    obs, reward, done = env.step(text)
    observations.append(obs)
    total += float(reward)
    if done:
      break
  return observations, total, done


# ---------------------------------------------------------------------------------------------
# calculator


def calculate(expression: str) -> int | None:
  """The value of `a op b op c ...` (op in + - *, usual precedence), or None if malformed.

  Bounded before any arithmetic: at most `MAX_CALC_OPERATORS` operators and `MAX_CALC_DIGITS`
  digits per number, so a policy cannot make the host compute a huge number.
  """
  expression = expression.strip()
  if _CALC_EXPRESSION.fullmatch(expression) is None:
    return None
  numbers = re.findall(r"\d+", expression)
  if len(numbers) > MAX_CALC_OPERATORS + 1 or any(len(n) > MAX_CALC_DIGITS for n in numbers):
    return None
  operators = re.findall(r"[+\-*]", expression)
  # Products first, then sums and differences left to right.
  terms, signs, product = [], [], int(numbers[0])
  for op, number in zip(operators, numbers[1:], strict=True):
    if op == "*":
      product *= int(number)
    else:
      terms.append(product)
      signs.append(op)
      product = int(number)
  terms.append(product)
  value = terms[0]
  for sign, term in zip(signs, terms[1:], strict=True):
    value = value + term if sign == "+" else value - term
  return value


class Calculator:
  """Arithmetic with a calculator tool: `calc:<expression>` gets its value; anything else is the
  final answer, scored by `verifiers.numeric_reward`."""

  def __init__(self):
    self.example = None
    self.calls = 0

  def reset(self, example: example_lib.Example) -> str:
    self.example, self.calls = example, 0
    return ""

  def step(self, text: str) -> tuple[str, float, bool]:
    if text.startswith(CALL_PREFIX):
      self.calls += 1
      value = calculate(text[len(CALL_PREFIX) :])
      return ("error" if value is None else str(value)) + TURN_END, 0.0, False
    return "", verifiers.numeric_reward(text, self.example), True


def _calculator_problem(rng: np.random.Generator, *, digits: int) -> example_lib.Example:
  a = int(rng.integers(10 ** (digits - 1), 10**digits))
  b = int(rng.integers(2, 10**digits))
  expression = f"{a}*{b}"
  answer = str(a * b)
  return example_lib.Example(prompt=expression + "=", answer=answer, solution=answer)


def _calculator_transcript(example: example_lib.Example) -> tuple[tuple[str, str], ...]:
  expression = example.prompt.rstrip("=")
  return (
    (f"{CALL_PREFIX}{expression}{TURN_END}", f"{example.answer}{TURN_END}"),
    (example.answer, ""),
  )


def calculator_task(
  *, digits: int = 2, max_turns: int = 3, seed: int, heldout_size: int = 128
) -> MultiTurnTask:
  """Products of a `digits`-digit and an up-to-`digits`-digit number, with a calculator.

  Raises:
    ValueError: an argument out of range.
  """
  if not isinstance(digits, int) or not 1 <= digits <= 4:
    raise ValueError(f"digits must be an int in [1, 4], got {digits!r}")
  task = example_lib.generated_task(
    f"calculator_d{digits}",
    functools.partial(_calculator_problem, digits=digits),
    reward_fn=verifiers.numeric_reward,
    seed=seed,
    heldout_size=heldout_size,
    heldout_fraction=0.1,
  )
  return MultiTurnTask(
    **_task_fields(task),
    make_env=Calculator,
    max_turns=max_turns,
    transcript=_calculator_transcript,
  )


# ---------------------------------------------------------------------------------------------
# guess


class Guess:
  """Guess the secret number (`example.answer`): replies "higher" / "lower" / "invalid", reward 1
  and done on the secret."""

  def __init__(self):
    self.secret = None

  def reset(self, example: example_lib.Example) -> str:
    self.secret = int(example.answer)
    return ""

  def step(self, text: str) -> tuple[str, float, bool]:
    text = text.strip()
    if not text.isdigit() or len(text) > MAX_CALC_DIGITS:
      return "invalid" + TURN_END, 0.0, False
    guess = int(text)
    if guess == self.secret:
      return "", 1.0, True
    return ("higher" if guess < self.secret else "lower") + TURN_END, 0.0, False


def _guess_problem(rng: np.random.Generator, *, high: int) -> example_lib.Example:
  game = int(rng.integers(0, 10000))
  secret = int(rng.integers(1, high + 1))
  return example_lib.Example(prompt=f"g{game}:1-{high}?", answer=str(secret), solution=str(secret))


def bisection_guesses(high: int, secret: int) -> list[int]:
  """The guesses of bisection over [1, high] (the midpoint, rounded down) until `secret`."""
  low, guesses = 1, []
  while True:
    guess = (low + high) // 2
    guesses.append(guess)
    if guess == secret:
      return guesses
    low, high = (guess + 1, high) if guess < secret else (low, guess - 1)


def _guess_transcript(example: example_lib.Example, *, high: int) -> tuple[tuple[str, str], ...]:
  secret = int(example.answer)
  turns = []
  for guess in bisection_guesses(high, secret):
    reply = "" if guess == secret else ("higher" if guess < secret else "lower") + TURN_END
    turns.append((f"{guess}{TURN_END}", reply))
  return tuple(turns)


def guess_task(
  *, high: int = 9, max_turns: int = 4, seed: int, heldout_size: int = 128
) -> MultiTurnTask:
  """Find a secret in [1, high] from higher/lower replies; each game has its own id in the
  prompt (so held-out games are disjoint by prompt), the secret is drawn independently.

  Raises:
    ValueError: an argument out of range.
  """
  if not isinstance(high, int) or not 2 <= high <= 99:
    raise ValueError(f"high must be an int in [2, 99], got {high!r}")
  task = example_lib.generated_task(
    f"guess_{high}",
    functools.partial(_guess_problem, high=high),
    reward_fn=verifiers.numeric_reward,
    seed=seed,
    heldout_size=heldout_size,
    heldout_fraction=0.1,
  )
  return MultiTurnTask(
    **_task_fields(task),
    make_env=Guess,
    max_turns=max_turns,
    transcript=functools.partial(_guess_transcript, high=high),
  )


def _task_fields(task: example_lib.Task) -> dict:
  return {f.name: getattr(task, f.name) for f in dataclasses.fields(example_lib.Task)}


def make_env_task(name: str, *, max_turns: int, seed: int, heldout_size: int, **kwargs):
  """A built-in multi-turn task by name (`BUILTIN_ENVS`), with its keyword arguments.

  Raises:
    ValueError: an unknown name or a bad argument.
  """
  factories = {"calculator": calculator_task, "guess": guess_task}
  if name not in factories:
    raise ValueError(f"unknown environment {name!r}; built-in ones are {BUILTIN_ENVS}")
  return factories[name](max_turns=max_turns, seed=seed, heldout_size=heldout_size, **kwargs)
