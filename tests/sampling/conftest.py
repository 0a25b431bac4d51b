"""Fixtures of the sampler tests."""

import pytest

from tests.sampling import tiny_policy


@pytest.fixture(scope="package")
def tiny():
  """The shared `tiny_policy.Tiny` policy, built once."""
  return tiny_policy.Tiny()
