"""The built-in multi-turn environments, by hand-worked episodes."""

import pytest

from grpojax.tasks import environments
from grpojax.tasks import example as example_lib


def test_calculate_follows_precedence_and_bounds_its_input():
  assert environments.calculate("23*47") == 1081
  assert environments.calculate("2+3*4") == 14  # 2 + 12
  assert environments.calculate("10-2*3+1") == 5  # 10 - 6 + 1
  assert environments.calculate(" 7 ") == 7
  for bad in ("", "2**3", "1/2", "3+", "a*b", "1+2+3+4+5+6", "1234567890*2"):
    assert environments.calculate(bad) is None, bad


def test_calculator_replies_to_calls_and_scores_the_final_answer():
  ex = example_lib.Example(prompt="23*47=", answer="1081", solution="1081")
  env = environments.Calculator()
  assert env.reset(ex) == ""
  assert env.step("calc:23*47") == ("1081\n", 0.0, False)
  assert env.step("calc:2**9") == ("error\n", 0.0, False)
  assert env.calls == 2
  assert env.step("1081") == ("", 1.0, True)
  env.reset(ex)
  assert env.step("1080") == ("", 0.0, True)


def test_guess_replies_higher_lower_and_ends_on_the_secret():
  ex = example_lib.Example(prompt="g1:1-9?", answer="6", solution="6")
  env = environments.Guess()
  env.reset(ex)
  assert env.step("5") == ("higher\n", 0.0, False)
  assert env.step("7") == ("lower\n", 0.0, False)
  assert env.step("x") == ("invalid\n", 0.0, False)
  assert env.step("6") == ("", 1.0, True)


def test_bisection_finds_every_secret_within_four_guesses():
  # [1, 9]: 5 -> (1..4: 2 -> 3 -> 4) or (6..9: 7 -> 8 -> 9).
  assert environments.bisection_guesses(9, 6) == [5, 7, 6]
  assert environments.bisection_guesses(9, 4) == [5, 2, 3, 4]
  assert max(len(environments.bisection_guesses(9, s)) for s in range(1, 10)) == 4


@pytest.mark.parametrize("name", environments.BUILTIN_ENVS)
def test_reference_transcripts_replay_to_full_reward(name):
  task = environments.make_env_task(name, max_turns=4, seed=0, heldout_size=16)
  assert isinstance(task, environments.MultiTurnTask)
  for ex in [task.train(i) for i in range(20)] + list(task.heldout):
    turns = task.transcript(ex)
    assert len(turns) <= task.max_turns
    policy = [text.removesuffix(environments.TURN_END) for text, _ in turns]
    observations, reward, done = environments.play(task.make_env(), ex, policy)
    assert (reward, done) == (1.0, True)
    # The transcript's replies are the environment's.
    assert observations[1:-1] == [obs for _, obs in turns[:-1]]
  prompts = {ex.prompt for ex in task.heldout}
  assert not prompts & {task.train(i).prompt for i in range(200)}


def test_calculator_transcript_by_hand():
  task = environments.calculator_task(seed=0, heldout_size=4)
  ex = example_lib.Example(prompt="23*47=", answer="1081", solution="1081")
  assert task.transcript(ex) == (("calc:23*47\n", "1081\n"), ("1081", ""))


def test_unknown_environment_and_bad_arguments_fail():
  with pytest.raises(ValueError, match="unknown environment 'chess'"):
    environments.make_env_task("chess", max_turns=2, seed=0, heldout_size=4)
  with pytest.raises(ValueError, match="digits"):
    environments.calculator_task(digits=7, seed=0)
  with pytest.raises(ValueError, match="high"):
    environments.guess_task(high=1, seed=0)
