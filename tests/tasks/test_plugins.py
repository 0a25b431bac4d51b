"""Tasks and rewards by import path, and data files read through configured fields: they load,
validate before any work and fail with one line naming the field or the item."""

import json

import pytest

from configs import common
from grpojax import tasks
from grpojax.rl import setup
from grpojax.tasks import example as example_lib
from grpojax.tasks import plugins

HERE = "tests.tasks.test_plugins"
EXAMPLE = tasks.Example(prompt="2+2=", answer="4", solution="4", source="data.jsonl:7")


def tiny_task(*, size: int = 3) -> tasks.Task:
  rows = [tasks.Example(prompt=f"{i}=", answer=str(i), solution=str(i)) for i in range(size)]
  return tasks.Task(
    name="tiny", train=lambda i: rows[i % size], heldout=rows, reward_fn=lambda c, e: 1.0
  )


def not_a_task():
  return 42


def length_parts(completion, example):
  return {"short": 1.0 / (1 + len(completion)), "long": float(len(completion))}


def scored(completion, example):
  return {"reward": 0.5, "bonus": 2.0}


def picky(completion, example):
  if completion == "boom":
    raise ValueError("cannot score this")
  return 1.0


def wordy(completion, example):
  return "good"


def _config(**task):
  config = common.base()
  config.task.update(dict(heldout_size=1) if "data_path" in task else {})
  config.task.update(task)
  return config


def test_a_task_factory_by_import_path_gets_its_kwargs():
  config = _config(name=f"{HERE}:tiny_task")
  config.task.kwargs = {"size": 5}
  setup.validate_config(config)
  task = setup.build_task(config.task)
  assert task.name == "tiny" and len(task.heldout) == 5


@pytest.mark.parametrize(
  ("name", "message"),
  [
    ("no_such_pkg.mod:fn", r"^config\.task\.name: cannot import module 'no_such_pkg\.mod'"),
    (f"{HERE}:missing", rf"^config\.task\.name: module '{HERE}' has no callable 'missing'"),
    (":fn", r"^config\.task\.name: expected 'module\.path:function'"),
    ("arithmetik", r"^config\.task\.name: unknown task 'arithmetik'"),
  ],
)
def test_a_bad_task_name_is_reported_before_any_work(name, message):
  with pytest.raises(setup.ConfigError, match=message):
    setup.validate_config(_config(name=name))


def test_a_factory_returning_something_else_or_refusing_its_kwargs_names_the_field():
  with pytest.raises(
    setup.ConfigError, match=r"^config\.task\.name: .*returned int, not a grpojax"
  ):
    setup.build_task(_config(name=f"{HERE}:not_a_task").task)
  config = _config(name=f"{HERE}:tiny_task")
  config.task.kwargs = {"sise": 5}
  with pytest.raises(setup.ConfigError, match=r"^config\.task\.kwargs: .*'sise'"):
    setup.build_task(config.task)
  config = _config(name="arithmetic")
  config.task.kwargs = {"size": 5}
  with pytest.raises(setup.ConfigError, match=r"^config\.task\.kwargs: "):
    setup.validate_config(config)


def test_rewards_are_weighted_and_every_component_is_logged():
  named = plugins.resolve_rewards(
    (f"{HERE}:length_parts", f"{HERE}:scored", "task"), (1.0, 2.0, 0.5), lambda c, e: 1.0
  )
  reward = plugins.RewardSum(named)
  before = reward.snapshot()
  # "abc": length_parts = 1/4 + 3 (no "reward" entry: the sum) = 3.25; scored = its "reward"
  # entry 0.5; task 1.0. Weighted: 3.25 + 2 * 0.5 + 0.5 * 1 = 4.75.
  assert reward("abc", EXAMPLE) == pytest.approx(4.75)
  # "": length_parts = 1 + 0 = 1; total 1 + 1 + 0.5 = 2.5.
  assert reward("", EXAMPLE) == pytest.approx(2.5)
  metrics = reward.metrics_since(before)
  assert metrics == pytest.approx(
    {
      "reward/length_parts": (3.25 + 1.0) / 2,
      "reward/length_parts/short": (0.25 + 1.0) / 2,
      "reward/length_parts/long": 1.5,
      "reward/scored": 0.5,
      "reward/scored/reward": 0.5,
      "reward/scored/bonus": 2.0,
      "reward/task": 1.0,
      "reward/errors": 0.0,
    }
  )
  # Only what was scored since the snapshot counts.
  later = reward.snapshot()
  reward("abcdefg", EXAMPLE)
  assert reward.metrics_since(later)["reward/length_parts/long"] == 7.0


def test_a_reward_that_raises_on_one_item_stops_with_the_item_or_scores_zero():
  named = plugins.resolve_rewards((f"{HERE}:picky",), ())
  strict = plugins.RewardSum(named)
  assert strict("fine", EXAMPLE) == 1.0
  with pytest.raises(plugins.RewardError) as raised:
    strict("boom", EXAMPLE)
  message = str(raised.value)
  assert f"'{HERE}:picky' raised ValueError: cannot score this" in message
  assert "completion 'boom' of example data.jsonl:7 (prompt '2+2=')" in message
  lenient = plugins.RewardSum(named, on_error="zero")
  before = lenient.snapshot()
  assert [lenient(c, EXAMPLE) for c in ("a", "boom", "b", "boom")] == [1.0, 0.0, 1.0, 0.0]
  assert lenient.metrics_since(before) == {"reward/picky": 1.0, "reward/errors": 2.0}


def test_reward_config_errors_name_the_field_before_any_work():
  cases = [
    (("no_such_pkg:fn",), (), "raise", r"^config\.reward\.fns\[0\]: cannot import"),
    (("task", f"{HERE}:nope"), (), "raise", r"^config\.reward\.fns\[1\]: module .* no callable"),
    (("brevity",), (), "raise", r"^config\.reward\.fns\[0\]: expected 'module\.path:function'"),
    (("task",), (1.0, 2.0), "raise", r"^config\.reward\.weights: 2 weights for 1 reward\.fns"),
    (("task",), (), "skip", r"^config\.reward\.on_error: must be one of"),
    ((f"{HERE}:picky", f"{HERE}:picky"), (), "raise", r"^config\.reward\.fns: two functions"),
  ]
  for fns, weights, on_error, message in cases:
    config = common.base()
    config.reward.update(dict(fns=fns, weights=weights, on_error=on_error))
    with pytest.raises(setup.ConfigError, match=message):
      setup.validate_config(config)


def test_a_reward_returning_the_wrong_type_is_caught_by_a_trial_call():
  task = tiny_task()
  reward = common.base().reward
  reward.fns = ("task", f"{HERE}:wordy")
  with pytest.raises(setup.ConfigError, match=r"^config\.reward\.fns\[1\]: .*returned str"):
    setup.with_rewards(task, reward)
  reward.fns = ("task",)
  combined = setup.with_rewards(task, reward).reward_fn
  assert isinstance(combined, plugins.RewardSum) and combined("x", task.heldout[0]) == 1.0
  reward.fns = ()
  assert setup.with_rewards(task, reward) is task  # empty: the task's own reward


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_a_data_task_reads_configured_fields_and_scores_with_the_chosen_verifier(tmp_path):
  rows = [{"q": f"Say {w}.", "gold": w, "why": f"It is {w}."} for w in ("red", "green", "blue")]
  path = _write_jsonl(tmp_path / "words.jsonl", rows)
  config = _config(name="data", data_path=path, heldout_path=path, verifier="exact", heldout_size=3)
  config.task.fields.update(dict(prompt="q", answer="gold", solution="why"))
  config.tokenizer.path = "tok"  # validation reads no files
  setup.validate_config(config)
  task = setup.build_task(config.task, str(tmp_path / "data"))
  first = task.heldout[0]
  assert (first.prompt, first.answer, first.solution) == ("Say red.", "red", "It is red.")
  assert first.source == f"{path}:1"
  assert task.reward_fn(" red ", first) == 1.0 and task.reward_fn("re", first) == 0.0


def test_a_parquet_data_task_with_a_marker_and_numeric_answers(tmp_path):
  pa = pytest.importorskip("pyarrow")
  import pyarrow.parquet as pq

  table = pa.table({"prompt": ["1+1=", "2+3="], "answer": ["so #### 2", "so #### 1,005"]})
  path = str(tmp_path / "sums.parquet")
  pq.write_table(table, path)
  config = _config(
    name="data", data_path=path, heldout_path=path, verifier="numeric", heldout_size=2
  )
  config.task.fields.marker = "####"
  task = setup.build_task(config.task, str(tmp_path / "data"))
  assert [e.answer for e in task.heldout] == ["2", "1005"]
  assert task.heldout[1].source == f"{path}:row 2"
  assert task.reward_fn("it is 1005", task.heldout[1]) == 1.0


def test_a_math_verify_data_task_scores_latex_answers(tmp_path):
  pytest.importorskip("math_verify", reason="needs the `math` extra")
  rows = [
    {"prompt": "Half of one?", "answer": "\\frac{1}{2}"},
    {"prompt": "One over two, as a decimal?", "answer": "0.5"},
    {"prompt": "Square root of four?", "answer": "2"},
  ]
  path = _write_jsonl(tmp_path / "math.jsonl", rows)
  config = _config(
    name="data", data_path=path, heldout_path=path, verifier="math_verify", heldout_size=3
  )
  config.tokenizer.path = "tok"  # validation reads no files
  setup.validate_config(config)
  task = setup.build_task(config.task, str(tmp_path / "data"))
  half, decimal, root = task.heldout
  assert (half.answer, decimal.answer) == ("\\frac{1}{2}", "0.5")
  with task.reward_fn as verify:
    # The same number written as a decimal, a fraction or a boxed LaTeX expression.
    assert verify("so it is 0.5", half) == 1.0
    assert verify("The answer is $\\boxed{\\frac{1}{2}}$.", half) == 1.0
    assert verify("\\frac{2}{4}", decimal) == 1.0
    assert verify("\\boxed{\\sqrt{4}}", root) == 1.0
    # A different value, and a last line with no answer in it.
    assert verify("\\frac{1}{3}", half) == 0.0
    assert verify("\\boxed{0.25}", decimal) == 0.0
    assert verify("2.5", root) == 0.0


def test_a_bad_data_row_is_named_by_file_and_line(tmp_path):
  path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b"}])
  config = _config(name="data", data_path=path, heldout_path=path)
  with pytest.raises(ValueError, match=rf"^{path}:2: missing key 'answer'"):
    setup.build_task(config.task, str(tmp_path / "data"))
  path = _write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a", "answer": "one"}])
  config = _config(name="data", data_path=path, heldout_path=path, verifier="numeric")
  with pytest.raises(ValueError, match=rf"^{path}:1: final answer 'one' is not a number"):
    setup.build_task(config.task, str(tmp_path / "data"))
  config.task.verifier = "exact"  # the same row is fine for an exact-match verifier
  assert setup.build_task(config.task, str(tmp_path / "data")).heldout[0].answer == "one"


def test_validation_names_data_task_fields():
  config = _config(name="data")
  with pytest.raises(setup.ConfigError, match=r"^config\.task\.data_path: the data task reads"):
    setup.validate_config(config)
  config = _config(name="data", data_path="x.jsonl", verifier="sympy")
  config.tokenizer.path = "tok"
  with pytest.raises(setup.ConfigError, match=r"^config\.task\.verifier: must be one of"):
    setup.validate_config(config)
  config.task.verifier = "exact"
  config.task.fields.prompt = ""
  with pytest.raises(setup.ConfigError, match=r"^config\.task\.fields\.prompt: "):
    setup.validate_config(config)


def test_example_source_defaults_to_empty_for_generated_problems():
  assert example_lib.Example(prompt="1=", answer="1", solution="1").source == ""
