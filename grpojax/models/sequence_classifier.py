"""Hugging Face `Qwen2/Qwen3/LlamaForSequenceClassification` checkpoints as reward models: the
decoder of `transformer.Decoder` plus a linear `score` head read at each row's last real token.

  score_bl = hidden_btd[b, last_b] · W_dl      (no bias, as transformers' `score` Linear)

`last_b` is the position of row b's last real token, taken from the mask, so left- and
right-padded rows score alike (transformers finds it from the pad id instead, which agrees
whenever no real token is the pad token).

Shapes: B rows, T tokens, D model dim, L labels.
"""

import dataclasses
import functools
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.models import build, hf_checkpoint, transformer
from grpojax.models import config as config_lib

Array = jax.Array
SCORE_TENSOR = "score.weight"


class SequenceClassifier(NamedTuple):
  """A loaded reward model, split for jitted use.

  Attributes:
    graphdef: the decoder's graph (no LM head: a classifier has none).
    params: the decoder's parameters.
    score_dl: the score head [D, L].
    config: the decoder's architecture.
    pad_id: the checkpoint's `pad_token_id`, or None.
  """

  graphdef: nnx.GraphDef
  params: nnx.State
  score_dl: Array
  config: config_lib.ModelConfig
  pad_id: int | None

  @property
  def num_labels(self) -> int:
    """L, the score head's outputs."""
    return int(self.score_dl.shape[1])


def load(checkpoint_dir: str, *, dtype=jnp.float32, param_dtype=jnp.float32) -> SequenceClassifier:
  """Loads a local `...ForSequenceClassification` checkpoint directory.

  Args:
    checkpoint_dir: holds `config.json` (a Qwen2, Qwen3 or Llama architecture whose name ends
      in `ForSequenceClassification`) and safetensors weights with `score.weight` [L, D].
    dtype: compute dtype of the decoder.
    param_dtype: dtype the parameters are cast to.

  Returns:
    The `SequenceClassifier`.

  Raises:
    FileNotFoundError, ValueError: naming the file or tensor at fault.
  """
  config_path = os.path.join(checkpoint_dir, "config.json")
  try:
    with open(config_path) as f:
      raw = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"{config_path}: not found (a reward model directory)") from None
  except ValueError as e:
    raise ValueError(f"{config_path}: not valid JSON ({e})") from None
  archs = raw.get("architectures") or []
  if not any(str(a).endswith("ForSequenceClassification") for a in archs):
    raise ValueError(
      f"{config_path}: architectures={archs!r}; a reward model is a "
      "Qwen2/Qwen3/LlamaForSequenceClassification checkpoint"
    )
  # A classifier has no LM head: read it as a tied decoder, which expects none.
  cfg = dataclasses.replace(config_lib.load_config(checkpoint_dir), tie_word_embeddings=True)
  decoder_params, extra = hf_checkpoint.read_decoder_params(
    checkpoint_dir, cfg, param_dtype=param_dtype, extra=(SCORE_TENSOR,)
  )
  score_ld = extra[SCORE_TENSOR]
  if score_ld.ndim != 2 or score_ld.shape[1] != cfg.hidden_size:
    raise ValueError(
      f"{checkpoint_dir}: tensor {SCORE_TENSOR!r} has shape {tuple(score_ld.shape)}, expected "
      f"[num_labels, {cfg.hidden_size}]"
    )
  graphdef = nnx.split(build.abstract_policy(cfg, dtype=dtype, param_dtype=param_dtype))[0]
  pad_id = raw.get("pad_token_id")
  return SequenceClassifier(
    graphdef=graphdef,
    params=decoder_params,
    score_dl=jnp.asarray(np.asarray(score_ld, np.float32).T, param_dtype),
    config=cfg,
    pad_id=None if pad_id is None else int(pad_id),
  )


def last_token_index(mask_bt: Array) -> Array:
  """[B] position of each row's last real token (0 for a row without any)."""
  positions = jnp.arange(mask_bt.shape[1])
  return jnp.max(jnp.where(mask_bt > 0, positions, 0), axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def scores(graphdef, params, score_dl: Array, tokens_bt: Array, mask_bt: Array) -> Array:
  """The classifier's outputs [B, L] in float32 for a (left- or right-) padded batch.

  Args:
    graphdef, params: `SequenceClassifier.graphdef` and `.params`.
    score_dl: the score head [D, L].
    tokens_bt: int token ids [B, T].
    mask_bt: [B, T] 1 for real tokens, 0 for padding.
  """
  model = nnx.merge(graphdef, params)
  out = model(
    tokens_bt,
    positions_bt=transformer.positions_from_mask(mask_bt),
    attn_mask_bts=transformer.causal_padding_mask(mask_bt),
    return_logits=False,
  )
  last = last_token_index(mask_bt)
  hidden_bd = jnp.take_along_axis(out.hidden, last[:, None, None], axis=1)[:, 0]
  return jnp.dot(hidden_bd.astype(jnp.float32), score_dl.astype(jnp.float32), precision="highest")
