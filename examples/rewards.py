"""A reward of one's own: named components, each logged as reward/brevity/<component>."""

from grpojax import tasks
from grpojax.tasks import verifiers


def brevity(completion: str | bytes, example: tasks.Example) -> dict[str, float]:
  """1 for an answer no longer than the reference, falling by 0.25 a character beyond it."""
  extra = max(len(verifiers.as_text(completion).strip()) - len(example.answer), 0)
  return {"reward": max(1.0 - 0.25 * extra, 0.0), "extra_chars": float(extra)}
