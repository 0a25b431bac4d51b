"""Shared test set-up: a fake 8-device CPU platform, and tiny random Hugging Face checkpoints."""

import os

# Must precede the first JAX import anywhere in the test run.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from tests import hf_reference  # noqa: E402


@pytest.fixture(scope="package")
def hf_checkpoint(tmp_path_factory):
  """family -> (transformers model, checkpoint directory), each made once per test run."""
  made = {}

  def get(family: str):
    if family not in made:
      model = hf_reference.make_hf_model(family)
      path = str(tmp_path_factory.mktemp(f"hf_{family}"))
      model.save_pretrained(path)
      made[family] = (model, path)
    return made[family]

  return get
