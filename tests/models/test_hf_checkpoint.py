"""Bad checkpoints fail loudly, naming the tensor or file, and nothing is half-loaded."""

import json
import os
import shutil

import numpy as np
import pytest
import safetensors.numpy

from grpojax import models
from grpojax.models import hf_checkpoint as hf_io


@pytest.fixture()
def ckpt(hf_checkpoint, tmp_path):
  """A private copy of a tiny Qwen2 checkpoint that a test may damage."""
  _, path = hf_checkpoint("qwen2_untied")
  dest = tmp_path / "ckpt"
  shutil.copytree(path, dest)
  return dest


def _rewrite(path, edit):
  tensors = safetensors.numpy.load_file(str(path / "model.safetensors"))
  edit(tensors)
  safetensors.numpy.save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor_is_named(ckpt):
  _rewrite(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
    models.from_pretrained(str(ckpt))


def test_extra_tensor_is_named(ckpt):
  _rewrite(ckpt, lambda t: t.update({"model.layers.0.surprise.weight": np.zeros(3, np.float32)}))
  with pytest.raises(ValueError, match=r"model\.layers\.0\.surprise\.weight"):
    models.from_pretrained(str(ckpt))


def test_misshaped_tensor_is_named_with_both_shapes(ckpt):
  def edit(t):
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 31), np.float32)

  _rewrite(ckpt, edit)
  with pytest.raises(ValueError, match=r"k_proj\.weight.*\(16, 31\).*\(16, 32\)"):
    models.from_pretrained(str(ckpt))


def test_unknown_architecture_is_named(ckpt):
  cfg = json.loads((ckpt / "config.json").read_text())
  cfg["model_type"], cfg["architectures"] = "gpt_neox", ["GPTNeoXForCausalLM"]
  (ckpt / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="gpt_neox"):
    models.from_pretrained(str(ckpt))


def test_unreadable_files_are_named(ckpt):
  (ckpt / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
  with pytest.raises(ValueError, match="model.safetensors"):
    models.from_pretrained(str(ckpt))
  (ckpt / "config.json").write_text("{ not json")
  with pytest.raises(ValueError, match="config.json"):
    models.from_pretrained(str(ckpt))
  os.remove(ckpt / "config.json")
  with pytest.raises(FileNotFoundError, match="config.json"):
    models.from_pretrained(str(ckpt))


def test_missing_weights_file_is_named(ckpt):
  os.remove(ckpt / "model.safetensors")
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    models.from_pretrained(str(ckpt))


def test_sharded_index_pointing_at_a_missing_shard_is_named(ckpt):
  tensors = safetensors.numpy.load_file(str(ckpt / "model.safetensors"))
  os.remove(ckpt / "model.safetensors")
  names = sorted(tensors)
  first, second = names[: len(names) // 2], names[len(names) // 2 :]
  safetensors.numpy.save_file({n: tensors[n] for n in first}, str(ckpt / "a.safetensors"))
  safetensors.numpy.save_file({n: tensors[n] for n in second}, str(ckpt / "b.safetensors"))
  index = {
    "weight_map": {**{n: "a.safetensors" for n in first}, **{n: "b.safetensors" for n in second}}
  }
  (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
  assert models.from_pretrained(str(ckpt)).config.num_layers == 2  # the sharded form loads
  os.remove(ckpt / "b.safetensors")
  with pytest.raises(FileNotFoundError, match="b.safetensors"):
    models.from_pretrained(str(ckpt))


def test_hf_names_cover_every_parameter_exactly_once(hf_checkpoint):
  _, path = hf_checkpoint("qwen3")
  model = models.from_pretrained(path)
  on_disk = set(safetensors.numpy.load_file(os.path.join(path, "model.safetensors")))
  assert set(hf_io.state_to_hf_tensors(model)) == on_disk
  assert "model.layers.0.self_attn.q_norm.weight" in on_disk
