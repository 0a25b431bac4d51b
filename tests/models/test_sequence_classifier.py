"""Sequence-classification reward models: parity with `transformers` and clear load errors."""

import json

import numpy as np
import pytest
import safetensors.numpy

from grpojax.models import sequence_classifier
from tests import hf_reference


def _save_classifier(family: str, path, num_labels: int = 1, seed: int = 0):
  """A tiny `...ForSequenceClassification` with every parameter random, saved to `path`."""
  torch = pytest.importorskip("torch", reason="parity tests need the `reference` extra")
  transformers = pytest.importorskip("transformers", reason="needs the `reference` extra")
  cfg = hf_reference.hf_config(family)
  cfg.num_labels = num_labels
  torch.manual_seed(seed)
  model = transformers.AutoModelForSequenceClassification.from_config(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or "layernorm" in name:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      else:
        p.normal_(0.0, 0.15)
  model.save_pretrained(str(path))
  return model


@pytest.mark.parametrize("family,num_labels", [("qwen2_untied", 1), ("llama3", 3)])
def test_scores_match_transformers(tmp_path, family, num_labels):
  torch = pytest.importorskip("torch", reason="parity tests need the `reference` extra")
  hf_model = _save_classifier(family, tmp_path, num_labels)
  rm = sequence_classifier.load(str(tmp_path))
  assert rm.num_labels == num_labels
  rng = np.random.default_rng(0)
  lengths = np.asarray([7, 3, 11, 1])
  t = 11
  # Right-padded with the pad id (0); real tokens avoid it, so transformers' pad-id rule and
  # the mask agree on each row's last token.
  tokens = np.zeros((4, t), np.int32)
  mask = np.zeros((4, t), np.int32)
  for i, n in enumerate(lengths):
    tokens[i, :n] = rng.integers(3, 97, n)
    mask[i, :n] = 1
  with torch.no_grad():
    want = hf_model(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
  got = np.asarray(sequence_classifier.scores(rm.graphdef, rm.params, rm.score_dl, tokens, mask))
  assert got.shape == (4, num_labels)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)

  # The same rows left-padded score the same: the last real token is read from the mask.
  left = np.zeros_like(tokens)
  left_mask = np.zeros_like(mask)
  for i, n in enumerate(lengths):
    left[i, t - n :] = tokens[i, :n]
    left_mask[i, t - n :] = 1
  got_left = sequence_classifier.scores(rm.graphdef, rm.params, rm.score_dl, left, left_mask)
  np.testing.assert_allclose(np.asarray(got_left), want, atol=1e-4, rtol=1e-4)


def test_last_token_index():
  mask = np.asarray([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(sequence_classifier.last_token_index(mask), [1, 3, 0, 3])


def test_causal_lm_checkpoint_is_refused(hf_checkpoint):
  _, path = hf_checkpoint("qwen2_untied")
  with pytest.raises(ValueError, match="ForSequenceClassification"):
    sequence_classifier.load(str(path))


def test_missing_score_head_is_named(tmp_path):
  _save_classifier("qwen2_untied", tmp_path)
  weights = tmp_path / "model.safetensors"
  tensors = safetensors.numpy.load_file(str(weights))
  tensors.pop("score.weight")
  safetensors.numpy.save_file(tensors, str(weights), metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"score\.weight"):
    sequence_classifier.load(str(tmp_path))


def test_missing_config_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    sequence_classifier.load(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"architectures": ["X"]}))
  with pytest.raises(ValueError, match=r"config\.json: architectures"):
    sequence_classifier.load(str(tmp_path))
