"""Tests for grpojax/tasks/math_verifier.py: the screen, the worker and its time limit."""

import os
import pickle
import signal
import time

import pytest

from grpojax.tasks import example as example_lib
from grpojax.tasks import math_verifier
from tests.tasks import adversarial

# Passes the screen yet keeps sympy busy for seconds (tangent of a 43,000-digit number; about
# 5 s here), so only the worker's time limit bounds it.
_SLOW_BUT_SCREENED_IN = "\\boxed{2i/\\tan\\exp99902}"


def _example(answer: str) -> example_lib.Example:
  return example_lib.Example(prompt="q", answer=answer, solution="")


@pytest.fixture(scope="module")
def reward_fn():
  """A verifier with a generous limit, so a loaded machine cannot fail the verdict tests."""
  with math_verifier.MathVerifier(timeout_s=10.0) as verifier:
    verifier("\\boxed{1}", _example("1"))  # Start the worker outside the timed tests.
    yield verifier


@pytest.fixture(scope="module")
def impatient():
  """A verifier with a short limit, for the tests of the limit itself."""
  with math_verifier.MathVerifier(timeout_s=1.0) as verifier:
    verifier("\\boxed{1}", _example("1"))
    yield verifier


@pytest.mark.parametrize(
  "completion, answer, reward",
  [
    ("The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{2^{10}}", "1024", 1.0),
    ("\\boxed{1023}", "1024", 0.0),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    ("\\boxed{[1,2)\\cup(3,4]}", "[1,2)\\cup(3,4]", 1.0),
    ("first \\boxed{3}, finally \\boxed{4}", "4", 1.0),
    ("first \\boxed{3}, finally \\boxed{4}", "3", 0.0),
    ("so the answer is $\\frac{\\sqrt{2}}{2}$.", "\\frac{1}{\\sqrt{2}}", 1.0),
    ("The answer: 42", "42", 1.0),
    (b"\\boxed{42}", "42", 1.0),
    ("\\boxed{\\!42}", "42", 1.0),
    ("\\boxed{42!}", "42", 0.0),  # Factorials never reach sympy.
    ("\\boxed{}", "42", 0.0),
    ("", "42", 0.0),
  ],
)
def test_hand_worked(reward_fn, completion, answer, reward):
  assert reward_fn(completion, _example(answer)) == reward


@pytest.mark.parametrize("case", sorted(adversarial.COMPLETIONS))
def test_adversarial_completions_return_quickly(reward_fn, case):
  start = time.perf_counter()
  reward = reward_fn(adversarial.COMPLETIONS[case], _example("42"))
  elapsed = time.perf_counter() - start
  assert elapsed < 1.0, f"took {elapsed:.2f} s"
  assert reward == 0.0


def test_time_limit_kills_a_slow_answer(impatient):
  assert math_verifier.final_answer(_SLOW_BUT_SCREENED_IN) is not None  # Not screened out.
  start = time.perf_counter()
  assert impatient(_SLOW_BUT_SCREENED_IN, _example("42")) == 0.0
  assert time.perf_counter() - start < 2.5  # 1 s limit, then kill.


def test_time_limit_kills_a_hang_and_the_worker_recovers(impatient):
  impatient("\\boxed{1}", _example("1"))
  process, spare_pid = impatient._process, impatient._spare.process.pid
  # The reference is trusted and not screened, so this comparison never ends in sympy.
  start = time.perf_counter()
  assert impatient("\\boxed{1}", _example("9^{9^{9^{9}}}")) == 0.0
  assert time.perf_counter() - start < 2.5
  assert process.poll() is not None  # Killed; the spare took its place.
  assert impatient._process.pid == spare_pid
  assert impatient("\\boxed{42}", _example("42")) == 1.0


def test_a_timeout_costs_no_restart(caplog):
  # Two calls after a timeout: both are answered by the spare that was started (and had
  # imported sympy) before the timeout, so no call waits for a new worker to start.
  with math_verifier.MathVerifier(timeout_s=1.0) as verifier:
    assert verifier("\\boxed{1}", _example("1")) == 1.0
    assert verifier.cold_starts == 1
    spare = verifier._spare.process
    with caplog.at_level("WARNING"):
      assert verifier("\\boxed{1}", _example("9^{9^{9^{9}}}")) == 0.0
    assert verifier.timeouts == 1
    assert "ran out of its 1.0 s" in caplog.text and "9^{9^{9^{9}}}" in caplog.text
    assert verifier("\\boxed{42}", _example("42")) == 1.0
    assert verifier("\\boxed{7}", _example("8")) == 0.0
    assert verifier._process is spare  # Already running before the timeout.
    assert verifier.cold_starts == 1  # Nobody waited for a worker started after the first call.
    assert verifier.timeouts == 1  # A wrong answer is not a timeout.
    assert verifier._spare is not None and verifier._spare.process is not spare


def test_without_a_spare_a_timeout_costs_a_restart():
  with math_verifier.MathVerifier(timeout_s=1.0, spare=False) as verifier:
    assert verifier("\\boxed{1}", _example("1")) == 1.0
    assert verifier._spare is None
    assert verifier("\\boxed{1}", _example("9^{9^{9^{9}}}")) == 0.0
    assert verifier("\\boxed{42}", _example("42")) == 1.0
    assert (verifier.cold_starts, verifier.timeouts) == (2, 1)


def test_worker_crash_is_survived(reward_fn):
  reward_fn("\\boxed{1}", _example("1"))
  os.kill(reward_fn._process.pid, signal.SIGKILL)
  reward_fn._process.wait()
  assert reward_fn("\\boxed{42}", _example("42")) == 1.0


def test_pickles_without_its_process(impatient):
  copy = pickle.loads(pickle.dumps(impatient))
  assert copy.timeout_s == 1.0
  assert copy._process is None and copy.spare
  assert (copy.timeouts, copy.cold_starts) == (0, 0)
  copy.close()


def test_rejects_bad_limits():
  with pytest.raises(ValueError):
    math_verifier.MathVerifier(timeout_s=0)


def test_judge_in_process():
  assert math_verifier.judge("\\boxed{\\frac{1}{2}}", "\\boxed{0.5}")
  assert not math_verifier.judge("\\boxed{1}", "\\boxed{2}")
  assert not math_verifier.judge("\\boxed{1}", "")


@pytest.mark.parametrize(
  "answer, safe",
  [
    ("\\frac{\\sqrt{3}}{2}", True),
    ("\\left(\\frac{1}{2}, \\frac{\\sqrt{3}}{2}\\right)", True),
    ("2^{100}", True),
    ("2^{-1}", True),
    ("e^\\pi", True),
    ("x^2+y^2", True),
    ("((((((1))))))", True),  # Depth 6 = MAX_LATEX_DEPTH.
    ("(((((((1)))))))", False),
    ("9^{9^{9}}", False),  # Tower.
    ("2^2^100", False),  # Chained.
    ("(9^{999})^{999}", False),  # 999 * 999 > MAX_EXPONENT_PRODUCT.
    ("2^-99999999", False),  # A signed exponent counts.
    ("2**-99999999", False),
    ("2^\\frac{99999999}{1}", False),  # A command exponent counts to the end.
    ("10!", False),
    ("\\binom{10}{5}", False),  # Not on the list of cheap commands.
    ("\\Gamma(5)", False),
    ("1" * 65, False),  # More than MAX_NUMBER_DIGITS.
    ("1+" * 200 + "1", False),  # Longer than MAX_LATEX_CHARS.
  ],
)
def test_latex_answer_is_safe(answer, safe):
  assert math_verifier.latex_answer_is_safe(answer) == safe


def test_final_answer():
  assert math_verifier.final_answer("so \\boxed{\\frac12}.") == "\\boxed{\\frac12}"
  assert math_verifier.final_answer("work\n\nThe answer is $3$.\n ") == "The answer is $3$."
  assert math_verifier.final_answer("\\boxed{9^{9^{9}}}") is None
  assert math_verifier.final_answer("  \n") is None
