"""Launch checks that run before the trainer's imports: one line, naming the culprit."""

import os
import subprocess
import sys

import ml_collections

from grpojax import preflight

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  return ml_collections.ConfigDict(
    {
      "optim": {"learning_rate": 1e-3, "head_learning_rate": 0.0, "b1": 0.9},
      "objective": {"recipe": "grpo", "epsilon": 0.2, "correction": {"name": "none"}},
      "task": {"name": "arithmetic", "data_path": "", "heldout_path": ""},
      "model": {"checkpoint": ""},
      "tokenizer": {"path": ""},
    }
  )


def test_a_misspelt_field_names_its_path_and_the_closest_names():
  message = preflight.unknown_field(_config(), "optim.learnin_rate")
  assert message.startswith("config.optim.learnin_rate: no field 'learnin_rate' in config.optim")
  # difflib ranks learning_rate first, head_learning_rate second; b1 is not close.
  assert "did you mean config.optim.learning_rate or config.optim.head_learning_rate?" in message
  assert "b1" not in message and "\n" not in message


def test_a_field_of_another_section_is_pointed_to():
  message = preflight.unknown_field(_config(), "objective.name")
  assert message.startswith("config.objective.name: no field 'name' in config.objective")
  assert "fields named 'name': config.objective.correction.name, config.task.name" in message
  # Nothing in objective is close to 'name', so its fields are listed.
  assert "the fields of config.objective: correction, epsilon, recipe" in message


def test_a_leaf_is_not_a_section_and_known_fields_pass():
  message = preflight.unknown_field(_config(), "optim.learning_rate.x")
  assert message == (
    "config.optim.learning_rate.x: config.optim.learning_rate is a float, not a section with fields"
  )
  assert preflight.unknown_field(_config(), "objective.correction.name") is None


def test_overrides_are_read_as_config_flags_reads_them():
  argv = [
    "main",
    "--config",
    "configs/default.py:local",
    "--config.optim.learning_rate=1",
    "--noconfig.tokenizer.chat_template",
    "-config.seed",
    "3",
    "--workdir=/tmp/w",
  ]
  assert preflight.config_file_argument(argv) == "configs/default.py:local"
  assert preflight.override_paths(argv) == [
    "optim.learning_rate",
    "tokenizer.chat_template",
    "seed",
  ]
  argv = ["m", "--config.optim.b1=0.8", "--config.objective.epsilonn=0.3"]
  assert preflight.first_unknown_override(_config(), argv) == (
    "config.objective.epsilonn: no field 'epsilonn' in config.objective; did you mean "
    "config.objective.epsilon?"
  )


def test_a_missing_config_file_is_named(tmp_path):
  missing = str(tmp_path / "nope.py")
  assert preflight.config_file_error(["m", f"--config={missing}:local"]) == (
    f"--config: no config file {missing!r} (relative to {os.getcwd()})"
  )
  present = os.path.join(REPO, "configs", "default.py")
  assert preflight.config_file_error(["m", "--config", f"{present}:local"]) is None


def test_missing_inputs_are_named(tmp_path):
  config = _config()
  config.task.data_path = str(tmp_path / "train.jsonl")
  config.model.checkpoint = str(tmp_path)  # a directory, but without config.json
  config.tokenizer.path = str(tmp_path / "tok")
  (tmp_path / "workdir").write_text("a file")
  errors = preflight.input_path_errors(config, str(tmp_path / "workdir"))
  assert errors == [
    f"config.task.data_path: no file {config.task.data_path!r}",
    f"config.model.checkpoint: {str(tmp_path)!r} holds no config.json",
    f"config.tokenizer.path: no directory {config.tokenizer.path!r}",
    f"--workdir: {str(tmp_path / 'workdir')!r} exists and is not a directory",
  ]
  (tmp_path / "train.jsonl").write_text("{}\n")
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "tok").mkdir()
  (tmp_path / "tok" / "tokenizer.json").write_text("{}")
  assert preflight.input_path_errors(config, str(tmp_path / "new_workdir")) == []


def test_the_module_imports_no_accelerator_stack():
  code = (
    "import sys, grpojax.preflight\n"
    "heavy = ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'tensorflow_datasets', 'grain', 'torch')\n"
    "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('grpojax.')))"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == "['grpojax.preflight']"


def test_missing_reward_checkpoints_are_named(tmp_path):
  config = _config()
  config.reward = ml_collections.ConfigDict(
    {"model": {"path": str(tmp_path / "rm")}, "judge": {"path": str(tmp_path)}}
  )
  assert preflight.input_path_errors(config, str(tmp_path / "workdir")) == [
    f"config.reward.model.path: no directory {str(tmp_path / 'rm')!r}",
    f"config.reward.judge.path: {str(tmp_path)!r} holds no config.json",
  ]
  (tmp_path / "rm").mkdir()
  (tmp_path / "rm" / "config.json").write_text("{}")
  (tmp_path / "config.json").write_text("{}")
  assert preflight.input_path_errors(config, str(tmp_path / "workdir")) == []
