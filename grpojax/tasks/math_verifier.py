"""LaTeX and free-form math answers judged by Hugging Face's `math-verify`, with a hard time limit.

math-verify parses answers with an ANTLR grammar and compares them with sympy, and both can run
for a very long time on short adversarial answers: sympy evaluates `9^{9^{9^9}}`, `10^{10}!` and
`\\binom{10^6}{5\\cdot 10^5}` eagerly and never returns; `\\tan\\exp99902` (tangent of a
43,000-digit number) takes about 7 s and `-999\\ln999199` up to 18 s to compare with `42`;
parsing slows sharply with nested brackets (about 1 s at depth 12, 8 s at depth 40).
math-verify's own timeouts use `signal.alarm`, which only works in the main thread, and no
thread can be interrupted inside sympy, so:

1. `latex_answer_is_safe`, a cheap screen, rejects the known hazards in the parent (length,
   bracket depth, digit counts, factorials, power towers, commands with costly meanings);
2. `MathVerifier` runs math-verify, with its timeouts off, in a child process
   (`python -m grpojax.tasks.math_verifier`), and kills it when an answer takes longer than
   `timeout_s`; a spare worker, sympy already imported, takes over at once, so the next answer
   does not wait for a restart (several seconds). Such an answer earns 0, as does any
   exception, and is counted and logged.

The worker talks JSON lines over pipes and needs a POSIX system (it waits with `select`).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import threading
import time

import math_verify

from grpojax.tasks import example as example_lib
from grpojax.tasks import verifiers

# Bounds on the final answer that may reach math-verify.
MAX_LATEX_CHARS = 256
MAX_LATEX_DEPTH = 6
# Bound on the product of all integers written in exponents, so `2^{100}` passes and
# `(9^{999})^{999}` does not.
MAX_EXPONENT_PRODUCT = 10_000

_LATEX_COMMAND = re.compile(r"\\([a-zA-Z]+)")
_LATEX_SPACING = re.compile(r"\\[!,;: ]")
_POWER = re.compile(r"\^|\*\*")
_FACTORIAL = re.compile(r"[\d)\]}]\s*!")
_DIGITS = re.compile(r"\d+")
_SIGNED_DIGITS = re.compile(r"[-+\u2212]?\s*\d+")
# LaTeX commands whose sympy meaning is usually cheap; any other command fails the screen.
_SAFE_LATEX_COMMANDS = frozenset(
  """
  frac dfrac tfrac sqrt cdot times div pm mp pi infty in notin cup cap setminus left right big
  Big bigg Bigg text textbf textit textrm mathrm mathbf mathit mathbb mathcal displaystyle
  boxed fbox le leq ge geq lt gt ne neq approx equiv sim circ deg degree log ln lg exp sin cos
  tan cot sec csc arcsin arccos arctan sinh cosh tanh emptyset varnothing dots ldots cdots vdots
  quad qquad prime angle triangle lfloor rfloor lceil rceil mid to rightarrow Rightarrow
  langle rangle vert lvert rvert Vert overline
  alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi
  rho sigma tau upsilon phi varphi chi psi omega Delta Theta Lambda Xi Pi Sigma Phi Psi Omega
  """.split()
)
_OPEN, _CLOSE = "([{", ")]}"


def _exponent(text: str, start: int) -> tuple[str, int] | None:
  """The exponent that starts at `start` and where it ends, or None if it is unclosed.

  A bracketed group, a signed digit run, or one character; a command (`2^\\frac{9}{1}`) takes
  the rest of the text, to be safe.
  """
  i = start
  while i < len(text) and text[i] == " ":
    i += 1
  if i == len(text):
    return None
  if text[i] in "{(":
    depth = 0
    for j in range(i, len(text)):
      depth += (text[j] in _OPEN) - (text[j] in _CLOSE)
      if depth == 0:
        return text[i : j + 1], j + 1
    return None
  if text[i] == "\\":
    return text[i:], len(text)
  number = _SIGNED_DIGITS.match(text, i)
  end = number.end() if number else i + 1
  return text[i:end], end


def latex_answer_is_safe(answer: str) -> bool:
  """Whether a final answer passes the cheap screen in front of math-verify.

  Conservative: the answer must be at most `MAX_LATEX_CHARS` long, nest brackets at most
  `MAX_LATEX_DEPTH` deep, hold no number of more than `verifiers.MAX_NUMBER_DIGITS` digits, use
  only LaTeX commands with cheap meanings (no `\\binom`, `\\sum`, `\\int`, `\\Gamma`, ...), no
  factorial, no chained or nested powers, and the integers in its exponents may multiply to at
  most `MAX_EXPONENT_PRODUCT`. Passing it does not make an answer fast: the time limit in
  `MathVerifier` is the guarantee.

  Args:
    answer: the final answer, e.g. the content of a `\\boxed{}`.

  Returns:
    True if the answer may be sent to math-verify.
  """
  if len(answer) > MAX_LATEX_CHARS:
    return False
  answer = _LATEX_SPACING.sub(" ", answer)
  if verifiers.nesting_depth(answer) > MAX_LATEX_DEPTH or _FACTORIAL.search(answer):
    return False
  if any(len(run) > verifiers.MAX_NUMBER_DIGITS for run in _DIGITS.findall(answer)):
    return False
  if any(cmd not in _SAFE_LATEX_COMMANDS for cmd in _LATEX_COMMAND.findall(answer)):
    return False
  exponent_product = 1
  for power in _POWER.finditer(answer):
    found = _exponent(answer, power.end())
    if found is None:
      return False
    exponent, end = found
    if _POWER.search(exponent) or _POWER.match(answer[end:].lstrip()):
      return False  # A tower, `a^{b^c}` or `a^b^c`.
    for run in _DIGITS.findall(exponent):
      exponent_product *= max(int(run), 1)
    if exponent_product > MAX_EXPONENT_PRODUCT:
      return False
  return True


def final_answer(completion: str | bytes) -> str | None:
  """The text math-verify should judge, or None if there is none or it fails the screen.

  Args:
    completion: the policy's text or bytes. The final answer is the last `\\boxed{}` or, without
      one, the last non-empty line (e.g. `"so the answer is $\\frac{1}{2}$."`).

  Returns:
    `\\boxed{answer}` for a boxed answer, else the last line; None when the answer is empty or
    fails `latex_answer_is_safe`.
  """
  text = verifiers.as_text(completion)
  answer = verifiers.last_boxed(text)
  if answer is not None:
    candidate = f"\\boxed{{{answer}}}"
  else:
    tail = text[-4 * MAX_LATEX_CHARS :].splitlines()
    lines = [line.strip() for line in tail if line.strip()]
    answer = candidate = lines[-1] if lines else ""
  if not answer.strip() or not latex_answer_is_safe(answer):
    return None
  return candidate


def judge(gold: str, answer: str) -> bool:
  """math-verify's verdict, in this process and without a time limit; False on any exception.

  Args:
    gold: the reference, e.g. `\\boxed{\\frac{1}{2}}`.
    answer: the text to judge, e.g. from `final_answer`.

  Returns:
    Whether math-verify finds them equal.
  """
  try:
    # Timeouts off: math-verify's use `signal.alarm`, which raises outside the main thread.
    gold_parsed = math_verify.parse(gold, parsing_timeout=None)
    answer_parsed = math_verify.parse(answer, parsing_timeout=None)
    if not gold_parsed or not answer_parsed:
      return False
    return bool(math_verify.verify(gold_parsed, answer_parsed, timeout_seconds=None))
  except Exception:  # noqa: BLE001 (any failure inside math-verify or sympy is a wrong answer)
    return False


class _Worker:
  """One worker process, its unread output and whether it has reported ready."""

  def __init__(self):
    package_root = str(pathlib.Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    self.process = subprocess.Popen(
      [sys.executable, "-m", "grpojax.tasks.math_verifier"],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      env=env,
    )
    self.ready = False
    self._buffer = b""

  def alive(self) -> bool:
    return self.process.poll() is None

  def wait_ready(self, timeout_s: float) -> bool:
    """Waits up to `timeout_s` for the `ready` line (once); whether the worker is ready."""
    if not self.ready:
      self.ready = self.read_line(timeout_s) == b"ready"
    return self.ready

  def read_line(self, timeout_s: float) -> bytes | None:
    """Reads one line within `timeout_s`, or returns None (time is up, or the worker exited)."""
    fd = self.process.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    while b"\n" not in self._buffer:
      remaining = deadline - time.monotonic()
      if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
        return None
      chunk = os.read(fd, 4096)
      if not chunk:  # The worker exited.
        return None
      self._buffer += chunk
    line, self._buffer = self._buffer.split(b"\n", 1)
    return line

  def stop(self) -> None:
    self.process.kill()
    self.process.wait()
    for stream in (self.process.stdin, self.process.stdout):
      stream.close()


class MathVerifier:
  """A reward function `(completion, example) -> float` backed by a math-verify worker process.

  `example.answer` is the reference in LaTeX or plain math (`\\frac{1}{2}`, `42`); it is trusted
  and boxed before parsing. Calls are serialised by a lock. The worker starts on the first call
  (a few seconds: it imports sympy; not counted against `timeout_s`), together with a spare that
  imports in the background. An answer that takes longer than `timeout_s` scores 0 with a
  warning (a correct but slow answer is a false negative), its worker is killed, the spare takes
  over at once and a new spare starts, so a timeout costs `timeout_s` and no restart. A crashed
  worker is replaced the same way. Not pickled: a copy sent to another process starts its own.

  Attributes:
    timeouts: answers that ran out of time so far (the trainer reports them per step).
    cold_starts: calls that had to start a worker and wait for it (no spare was running).

  ```
  with math_verifier.MathVerifier(timeout_s=2.0) as reward_fn:
    reward_fn("so \\\\boxed{\\\\frac12}", example)
  ```
  """

  def __init__(
    self, *, timeout_s: float = 2.0, startup_timeout_s: float = 120.0, spare: bool = True
  ):
    """Configures the verifier; no process starts yet.

    Args:
      timeout_s: wall-clock limit for judging one answer, in seconds.
      startup_timeout_s: limit for a worker to import math-verify and report ready.
      spare: keep a second, idle worker running to take over after a timeout or a crash
        (costs one more process and its memory, about 150 MB).

    Raises:
      ValueError: a limit is not positive.
    """
    if not timeout_s > 0 or not startup_timeout_s > 0:
      raise ValueError(f"time limits must be positive, got {timeout_s}, {startup_timeout_s}")
    self.timeout_s = float(timeout_s)
    self.startup_timeout_s = float(startup_timeout_s)
    self.spare = bool(spare)
    self.timeouts = 0
    self.cold_starts = 0
    self._worker: _Worker | None = None
    self._spare: _Worker | None = None
    self._lock = threading.Lock()

  @property
  def _process(self) -> subprocess.Popen | None:
    """The active worker's process, or None."""
    return None if self._worker is None else self._worker.process

  def __call__(self, completion: str | bytes, example: example_lib.Example) -> float:
    """1.0 when math-verify judges the completion's `final_answer` equal to `example.answer`.

    Args:
      completion: the policy's text or bytes.
      example: the problem.

    Returns:
      1.0 or 0.0; 0.0 also when the answer fails the screen, math-verify raises, or judging
      takes longer than `timeout_s`.
    """
    candidate = final_answer(completion)
    if candidate is None:
      return 0.0
    request = json.dumps({"gold": f"\\boxed{{{example.answer}}}", "answer": candidate})
    with self._lock:
      reply = self._ask(request.encode() + b"\n")
    if reply is _TIMED_OUT:
      logging.getLogger(__name__).warning(
        "math-verify ran out of its %.1f s on the answer %r (reference %r); scored 0, a false "
        "negative if the answer is right.",
        self.timeout_s,
        candidate[:200],
        str(example.answer)[:200],
      )
    return 1.0 if reply == b"1" else 0.0

  def _ask(self, request: bytes) -> bytes | object | None:
    """Sends one request line; the reply line, `_TIMED_OUT`, or None after a crash."""
    worker = self._active()
    try:
      worker.process.stdin.write(request)
      worker.process.stdin.flush()
    except OSError:  # The worker died; the spare takes over.
      self._replace_active()
      return None
    reply = worker.read_line(self.timeout_s)
    if reply is None:
      timed_out = worker.alive()
      self._replace_active()
      if timed_out:
        self.timeouts += 1
        return _TIMED_OUT
    return reply

  def _active(self) -> _Worker:
    """The worker to ask, ready: the current one, else the spare, else a fresh one."""
    if self._worker is not None and not self._worker.alive():
      self._replace_active()
    if self._worker is None:
      self._worker = _Worker()
      self.cold_starts += 1
    if self.spare and (self._spare is None or not self._spare.alive()):
      if self._spare is not None:
        self._spare.stop()
      self._spare = _Worker()  # Imports in the background while the active worker judges.
    if not self._worker.wait_ready(self.startup_timeout_s):
      self._stop()
      raise RuntimeError("the math-verify worker did not start")
    return self._worker

  def _replace_active(self) -> None:
    """Kills the active worker and promotes the spare (started earlier) in its place."""
    if self._worker is not None:
      self._worker.stop()
    self._worker, self._spare = self._spare, None
    if self._worker is not None and self.spare:
      self._spare = _Worker()

  def _stop(self) -> None:
    for worker in (self._worker, self._spare):
      if worker is not None:
        worker.stop()
    self._worker = self._spare = None

  def close(self) -> None:
    """Stops the workers; a later call starts new ones."""
    with self._lock:
      self._stop()

  def __enter__(self) -> MathVerifier:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __del__(self):
    try:
      self._stop()
    except Exception:  # noqa: BLE001 (best effort, possibly during interpreter shutdown)
      pass

  def __getstate__(self) -> dict:
    return {
      "timeout_s": self.timeout_s,
      "startup_timeout_s": self.startup_timeout_s,
      "spare": self.spare,
    }

  def __setstate__(self, state: dict) -> None:
    self.__init__(**state)


# `_ask`'s reply when the answer ran out of time (distinct from a crash's None).
_TIMED_OUT = object()


def _exit_with_parent() -> None:
  """Ends the worker when its parent dies, even in the middle of a long computation."""
  if sys.platform.startswith("linux"):
    # PR_SET_PDEATHSIG = 1: the kernel kills us, even inside a C call that holds the GIL.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
  else:  # Best effort elsewhere: a thread that runs whenever the GIL is free.
    parent = os.getppid()

    def watch() -> None:
      while os.getppid() == parent:
        time.sleep(1.0)
      os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
  """The worker: `{"gold", "answer"}` JSON lines in, `1`/`0` lines out, after a `ready` line."""
  _exit_with_parent()
  logging.getLogger("math_verify").setLevel(logging.ERROR)  # This process is the worker's own.
  # Replies get a private copy of stdout; anything else printed to stdout goes to stderr, so a
  # stray print inside a library cannot corrupt the protocol.
  out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
  sys.stdout.flush()
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  out.write(b"ready\n")
  out.flush()
  for line in sys.stdin.buffer:
    try:
      request = json.loads(line)
      verdict = judge(request["gold"], request["answer"])
    except Exception:  # noqa: BLE001 (a malformed request is answered, not fatal)
      verdict = False
    out.write(b"1\n" if verdict else b"0\n")
    out.flush()


if __name__ == "__main__":
  main()
