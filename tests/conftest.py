"""Shared test set-up: a fake 8-device CPU platform, made once before JAX initialises."""

import os

# Must precede the first JAX import anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
