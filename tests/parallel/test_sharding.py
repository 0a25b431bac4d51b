"""Meshes, logical-axis rules, and sharded train steps / sampling against unsharded runs.

Runs on the 8 fake CPU devices of `tests/conftest.py`. One tiny random Decoder (vocab 61, so the
vocabulary dimension exercises the replicate-on-indivisible fallback) is built once and reused.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from grpojax import objectives, sampling, types
from grpojax.models import config as config_lib
from grpojax.models import transformer
from grpojax.parallel import mesh as mesh_lib
from grpojax.parallel import rules as rules_lib
from grpojax.rl import step

AXES = ("data", "fsdp", "tensor")
MESHES = [(8, 1, 1), (2, 2, 2), (1, 4, 2)]
B, TP, N, G = 8, 4, 6, 4  # rows, prompt length, completion length, group size


def _mesh(sizes):
  return mesh_lib.make_mesh(dict(zip(AXES, sizes, strict=True)))


# --- make_mesh -------------------------------------------------------------------------------


def test_make_mesh_sizes_names_and_auto_axes():
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert mesh.axis_names == AXES
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert mesh.devices.size == len(jax.devices())


def test_make_mesh_rest_axis_and_pairs():
  mesh = mesh_lib.make_mesh([("data", -1), ("tensor", 2)])
  assert dict(mesh.shape) == {"data": 4, "tensor": 2}
  mesh = mesh_lib.make_mesh({"data": 1, "fsdp": -1}, devices=jax.devices()[:4])
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4}
  assert set(mesh.devices.ravel()) == set(jax.devices()[:4])


@pytest.mark.parametrize(
  "axes, match",
  [
    ({"data": 3, "tensor": 2}, "'data'"),  # 6 != 8; data=3 does not divide 8
    ({"data": -1, "tensor": 3}, "'data'"),  # 3 does not divide 8: the -1 axis is named
    ({"data": 2, "fsdp": 2}, "multiply to 4"),  # divides but does not cover 8 devices
    ({"data": -1, "fsdp": -1}, "only one"),
    ({"data": 0, "fsdp": 8}, "'data'"),
    ([("data", 4), ("data", 2)], "repeat"),
  ],
)
def test_make_mesh_errors_name_the_axis(axes, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.make_mesh(axes)


# --- rules -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup():
  """The tiny model, objective, optimiser, the RL update, a batch and the unsharded step."""
  cfg = config_lib.ModelConfig(
    model_type="qwen2",
    vocab_size=61,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    attention_bias=True,
  )
  model = transformer.Decoder(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  obj_config = objectives.default_config("grpo")
  obj_config.kl_coef = 0.0
  objective = objectives.make(obj_config, group_size=G)
  optimizer = optax.adamw(1e-3, weight_decay=0.01)
  # Two micro-batches of 4 rows: the sharded update also splits every micro-batch over devices.
  ucfg = step.UpdateConfig(group_size=G, microbatch_rows=B // 2, seq_chunk=1024)
  rng = np.random.default_rng(0)
  completion_mask = rng.integers(0, 2, (B, N)).astype(np.int32)
  completion_mask[:, 0] = 1
  seqs = types.Sequences(
    tokens=jnp.asarray(rng.integers(0, cfg.vocab_size, (B, TP + N)), jnp.int32),
    attn_mask=jnp.asarray(np.concatenate([np.ones((B, TP), np.int32), completion_mask], 1)),
    completion_mask=jnp.asarray(completion_mask),
  )
  batch = step.Batch(
    seqs=seqs,
    sampler_logprobs=jnp.asarray(rng.normal(size=(B, N)) - 3.0, jnp.float32),
    rewards=jnp.asarray(rng.integers(0, 2, B), jnp.float32),
  )
  state = step.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    objective_state=objective.init(),
    ref_params=None,
    data=None,
  )
  key = jax.random.key(1)
  update = step.build_update(graphdef, objective, optimizer, ucfg)
  new_state, metrics = jax.jit(update)(jax.tree.map(jnp.copy, state), batch, key)
  assert float(metrics["update/nonfinite"]) == 0
  assert len(jax.tree.leaves(new_state.params)[0].devices()) == 1
  return dict(
    cfg=cfg,
    model=model,
    graphdef=graphdef,
    params=params,
    objective=objective,
    optimizer=optimizer,
    ucfg=ucfg,
    batch=batch,
    state=state,
    opt_state=state.opt_state,
    key=key,
    ref=dict(state=new_state, metrics=metrics),
  )


def _specs(shardings):
  return {types.path_to_str(p): s.spec for p, s in jax.tree_util.tree_leaves_with_path(shardings)}


def test_param_shardings_default_rules(setup):
  specs = _specs(rules_lib.param_shardings(setup["params"], _mesh((2, 2, 2))))
  assert specs["layers/0/self_attn/q_proj/kernel"] == P("fsdp", "tensor")
  assert specs["layers/1/self_attn/k_proj/bias"] == P("tensor")
  assert specs["layers/0/self_attn/o_proj/kernel"] == P("tensor", "fsdp")
  assert specs["layers/0/mlp/up_proj/kernel"] == P("fsdp", "tensor")
  assert specs["layers/1/mlp/down_proj/kernel"] == P("tensor", "fsdp")
  assert specs["norm/scale"] == P()
  # vocab 61 is not divisible by tensor=2: that dimension falls back to replicated.
  assert specs["embed_tokens/embedding"] == P(None, "fsdp")
  assert specs["lm_head/kernel"] == P("fsdp")


def test_param_shardings_drop_missing_and_unit_axes(setup):
  # (8, 1, 1): fsdp and tensor have size 1, so every parameter is replicated.
  specs = _specs(rules_lib.param_shardings(setup["params"], _mesh((8, 1, 1))))
  assert set(specs.values()) == {P()}
  # A mesh without a "tensor" axis at all.
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
  specs = _specs(rules_lib.param_shardings(setup["params"], mesh))
  assert specs["layers/0/self_attn/q_proj/kernel"] == P("fsdp")


def test_optimizer_state_follows_param_rules(setup):
  mesh = _mesh((1, 4, 2))
  param_specs = _specs(rules_lib.param_shardings(setup["params"], mesh))
  opt_specs = _specs(rules_lib.param_shardings(setup["opt_state"], mesh))
  assert opt_specs["0/count"] == P()
  for path, spec in param_specs.items():
    assert opt_specs[f"0/mu/{path}"] == spec and opt_specs[f"0/nu/{path}"] == spec


@pytest.mark.parametrize(
  "family",
  [
    dict(model_type="qwen3", qk_norm=True, tie_word_embeddings=True),
    dict(model_type="llama", attention_out_bias=True, mlp_bias=True),
  ],
  ids=["qwen3_tied", "llama_biases"],
)
def test_default_rules_cover_every_family(family):
  cfg = config_lib.ModelConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    **family,
  )
  abstract = jax.eval_shape(
    lambda: nnx.split(transformer.Decoder(cfg, rngs=nnx.Rngs(0)), nnx.Param)[1]
  )
  specs = _specs(rules_lib.param_shardings(abstract, _mesh((2, 2, 2))))
  assert specs["embed_tokens/embedding"] == P("tensor", "fsdp")  # 64 divides: no fallback
  if family["model_type"] == "qwen3":
    assert "lm_head/kernel" not in specs and specs["layers/0/self_attn/q_norm/scale"] == P()
  else:
    assert specs["layers/0/self_attn/o_proj/bias"] == P("fsdp")
    assert specs["layers/0/mlp/gate_proj/bias"] == P("tensor")


def test_mesh_axis_used_once_per_array():
  rules = rules_lib.Rules(
    param_axes=(("w", ("a", "b")),), logical_axes={"a": "tensor", "b": "tensor"}
  )
  mesh = _mesh((2, 2, 2))
  shardings = rules_lib.param_shardings(
    {"w": jax.ShapeDtypeStruct((4, 4), jnp.float32)}, mesh, rules
  )
  assert shardings["w"].spec == P("tensor")


def test_unmatched_and_wrong_rank_raise():
  mesh = _mesh((2, 2, 2))
  with pytest.raises(ValueError, match="extra/kernel"):
    rules_lib.param_shardings({"extra": {"kernel": jnp.zeros((4, 4))}}, mesh)
  with pytest.raises(ValueError, match="rank 3"):
    rules_lib.param_shardings({"lm_head": {"kernel": jnp.zeros((4, 4, 4))}}, mesh)
  with pytest.raises(ValueError, match="'nope'"):
    rules_lib.Rules(param_axes=(("w", ("nope",)),))
  # A catch-all pattern replicates the rest.
  rules = rules_lib.Rules(param_axes=(*rules_lib.DEFAULT_PARAM_AXES, (".*", None)))
  assert rules_lib.param_shardings({"extra": jnp.zeros((4, 4))}, mesh, rules)["extra"].spec == P()


@pytest.mark.parametrize(
  "sizes, spec, rows",
  [((8, 1, 1), P("data"), 1), ((2, 2, 2), P(("data", "fsdp")), 2), ((1, 4, 2), P("fsdp"), 2)],
)
def test_batch_sharding(sizes, spec, rows):
  sharding = rules_lib.batch_sharding(_mesh(sizes))
  assert sharding.spec == spec
  x = jax.device_put(jnp.zeros((B, 3, 2)), sharding)
  assert {s.data.shape for s in x.addressable_shards} == {(rows, 3, 2)}


# --- sharded train step ----------------------------------------------------------------------


def _sharded_update(setup, mesh, *, pin: bool):
  """The update jitted for `mesh` as `train.build` does it (in/out shardings, donation, and
  micro-batch rows pinned to the batch axes), or left to propagation (`pin=False`)."""
  param_sh = rules_lib.param_shardings(setup["params"], mesh)
  opt_sh = rules_lib.param_shardings(setup["opt_state"], mesh)
  data = rules_lib.batch_sharding(mesh)
  rep = rules_lib.replicated(mesh)
  state_sh = setup["state"]._replace(
    step=rep,
    params=param_sh,
    opt_state=opt_sh,
    objective_state=jax.tree.map(lambda _: rep, setup["state"].objective_state),
  )
  micro = NamedSharding(mesh, P(None, None, *data.spec))
  constrain = (lambda x: jax.lax.with_sharding_constraint(x, micro)) if pin else (lambda x: x)
  update = step.build_update(
    setup["graphdef"], setup["objective"], setup["optimizer"], setup["ucfg"], constrain=constrain
  )
  batch_sh = jax.tree.map(lambda _: data, setup["batch"])
  state = jax.device_put(jax.tree.map(jnp.copy, setup["state"]), state_sh)
  batch = jax.device_put(setup["batch"], batch_sh)
  if pin:
    update = jax.jit(
      update,
      in_shardings=(state_sh, batch_sh, rep),
      out_shardings=(state_sh, rep),
      donate_argnums=(0,),
    )
  else:
    update = jax.jit(update)
  return update, state, batch, state_sh


def _assert_update_matches(setup, new_state, metrics, state_sh, *, layout_kept=True):
  ref = setup["ref"]
  for name in ("loss", "grad_norm", "objective/ratio_mean", "entropy/mean"):
    # The on-policy loss is analytically 0 (advantages sum to 0 per group): an absolute floor.
    np.testing.assert_allclose(
      float(metrics[name]), float(ref["metrics"][name]), rtol=1e-5, atol=1e-7, err_msg=name
    )
  for name in ("params", "opt_state"):
    got, want = getattr(new_state, name), getattr(ref["state"], name)
    for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
    ):
      np.testing.assert_allclose(
        np.asarray(a),
        np.asarray(b),
        atol=1e-5,
        rtol=1e-5,
        err_msg=f"{name}: {types.path_to_str(path)}",
      )
    if not layout_kept:
      continue
    # The layout survives the update.
    for (path, a), s in zip(
      jax.tree_util.tree_leaves_with_path(got),
      jax.tree.leaves(getattr(state_sh, name)),
      strict=True,
    ):
      assert a.sharding.is_equivalent_to(s, a.ndim), (types.path_to_str(path), a.sharding, s)


@pytest.mark.parametrize("sizes", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_update_equals_unsharded(setup, sizes):
  """The update jitted with the trainer's shardings and donation matches the one-device one."""
  update, state, batch, state_sh = _sharded_update(setup, _mesh(sizes), pin=True)
  q = state.params["layers"][0]["self_attn"]["q_proj"]["kernel"][...]
  fsdp, tensor = sizes[1], sizes[2]
  assert {s.data.shape for s in q.addressable_shards} == {(32 // fsdp, 32 // tensor)}
  new_state, metrics = update(state, batch, setup["key"])
  _assert_update_matches(setup, new_state, metrics, state_sh)
  for a, s in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state_sh.params), strict=True):
    assert a.sharding == s  # pinned by out_shardings, not just equivalent
  assert all(a.is_deleted() for a in jax.tree.leaves(state.params))  # donated
  assert not any(a.is_deleted() for a in jax.tree.leaves(setup["params"]))


def test_unpinned_update_computes_the_same_step(setup):
  """Fed sharded inputs, the plain jitted update computes the same step. Left to propagation,
  XLA may lay small parameters out otherwise (a norm scale came out split over fsdp), which is
  why the trainer pins the state's shardings (`test_sharded_update_equals_unsharded`)."""
  update, state, batch, state_sh = _sharded_update(setup, _mesh((2, 2, 2)), pin=False)
  new_state, metrics = update(state, batch, setup["key"])
  _assert_update_matches(setup, new_state, metrics, state_sh, layout_kept=False)


def test_sharded_bucketed_update_equals_unsharded(setup):
  """Length bucketing under the trainer's shardings (rows gathered by length across the batch
  shards, micro-batches cut to 3 or 6 completion tokens) gives the one-device plain step."""
  seqs = setup["batch"].seqs
  short_bn = (np.arange(B)[:, None] % 2 == 0) & (np.arange(N)[None] >= N // 2)  # rows 0, 2, ..
  cut_n = lambda x: jnp.where(short_bn, 0, x)
  seqs = seqs._replace(
    attn_mask=jnp.concatenate([seqs.attn_mask[:, :TP], cut_n(seqs.attn_mask[:, TP:])], 1),
    completion_mask=cut_n(seqs.completion_mask),
  )
  batch = setup["batch"]._replace(seqs=seqs)
  plain = step.build_update(
    setup["graphdef"], setup["objective"], setup["optimizer"], setup["ucfg"]
  )
  want_state, want_metrics = jax.jit(plain)(
    jax.tree.map(jnp.copy, setup["state"]), batch, setup["key"]
  )
  ucfg = dataclasses.replace(setup["ucfg"], length_buckets=2)
  bucketed = dict(setup, ucfg=ucfg, batch=batch, ref=dict(state=want_state, metrics=want_metrics))
  update, state, batch_sh, state_sh = _sharded_update(bucketed, _mesh((2, 2, 2)), pin=True)
  new_state, metrics = update(state, batch_sh, setup["key"])
  _assert_update_matches(bucketed, new_state, metrics, state_sh)


# --- sharded sampling ------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sharded_sampling_equals_unsharded(setup, temperature):
  graphdef, state = nnx.split(setup["model"])
  prompts = [[5, 17, 33, 9, 41], [60, 3, 8], [12, 14, 4, 7, 7, 30, 2], [1]]
  tokens, mask = sampling.pad_prompts(prompts, pad_id=0, bucket=8)
  kw = dict(
    max_new_tokens=6,
    num_samples=2,
    method=sampling.Greedy() if temperature == 0 else sampling.Sample(temperature),
    stop_ids=(),
    pad_id=0,
  )
  key = jax.random.key(7)
  ref = sampling.sample(graphdef, state, jnp.asarray(tokens), jnp.asarray(mask), key, **kw)
  mesh = _mesh((2, 2, 2))
  data = rules_lib.batch_sharding(mesh)
  out = sampling.sample(
    graphdef,
    rules_lib.shard_params(state, rules_lib.param_shardings(state, mesh)),
    jax.device_put(jnp.asarray(tokens), data),
    jax.device_put(jnp.asarray(mask), data),
    key,
    **kw,
  )
  assert len(out.tokens.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  np.testing.assert_array_equal(np.asarray(out.mask), np.asarray(ref.mask))
  np.testing.assert_allclose(
    np.asarray(out.policy_logprobs), np.asarray(ref.policy_logprobs), atol=1e-5
  )
  if temperature == 0.0:
    assert len(set(np.asarray(ref.tokens).ravel().tolist())) > 1


def test_sharded_update_lowers_for_a_target_mesh_without_arrays(setup):
  """A compile-only dry run: lower the update from shapes and shardings alone."""
  mesh = _mesh((1, 4, 2))
  update, state, batch, state_sh = _sharded_update(setup, mesh, pin=True)
  abstract = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  hlo = update.lower(abstract(setup["state"]), abstract(setup["batch"]), setup["key"]).as_text()
  assert "mhlo.sharding" in hlo or "sdy.sharding" in hlo
