"""Tests for grpojax/models/build.py: a policy built once from its arguments, never mutated,
drawing exactly the plain decoder's random parameters whatever its precision or heads."""

import ast
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import models, precision
from grpojax.models import build

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = models.ModelConfig(
  model_type="qwen3",
  vocab_size=53,
  hidden_size=16,
  intermediate_size=32,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  qk_norm=True,
)
HEADS = models.HeadsConfig(value=True, log_z=True, temperature=True)
LORA = precision.PrecisionPolicy(base_format="int4", lora_rank=2, lora_alpha=4.0)


def _leaves(model_or_state, decoder_only=False):
  state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)
  return {
    path: np.asarray(var.get_value())
    for path, var in nnx.to_flat_state(state)
    if not (decoder_only and path[0] == "heads")
  }


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for path in a:
    assert a[path].dtype == b[path].dtype and a[path].tobytes() == b[path].tobytes(), path


@nnx.jit
def _logits(model, ids):
  return model(ids).logits


def _ids():
  return jnp.asarray(np.random.RandomState(0).randint(0, 53, (2, 7)))


def test_default_policy_draws_exactly_the_plain_decoders_parameters():
  plain = models.Decoder(CFG, rngs=nnx.Rngs(7))
  policy = models.init_policy(CFG, seed=7)
  _assert_same(_leaves(policy), _leaves(plain))
  assert nnx.split(policy)[0] == nnx.split(plain)[0]


def test_heads_do_not_change_the_decoders_parameters():
  plain = _leaves(models.Decoder(CFG, rngs=nnx.Rngs(7)))
  for model in (
    models.init_policy(CFG, seed=7, heads=HEADS),
    models.Decoder(CFG, rngs=nnx.Rngs(7), heads=HEADS),
    models.init_policy(CFG, seed=7, heads=HEADS, precision=precision.PrecisionPolicy(matmul="fp8")),
  ):
    _assert_same(_leaves(model, decoder_only=True), plain)
    heads = {p for p in _leaves(model) if p[0] == "heads"}
    assert {p[1] for p in heads} == {"value", "log_z", "temperature"}
  assert "heads" not in nnx.state(models.init_policy(CFG, seed=7))
  assert models.Decoder(CFG, rngs=nnx.Rngs(7)).heads is None
  # The heads' own key: the same heads whatever else the policy has.
  a = _leaves(models.init_policy(CFG, seed=7, heads=HEADS).heads)
  b = _leaves(models.init_policy(CFG, seed=7, heads=HEADS, precision=LORA).heads)
  _assert_same(a, b)


@pytest.mark.parametrize("base_format", ["none", "nvfp4"])
def test_lora_by_construction_starts_at_the_base(base_format):
  adapted = precision.PrecisionPolicy(base_format=base_format, lora_rank=2, lora_alpha=4.0)
  base = precision.PrecisionPolicy(base_format=base_format, lora_rank=0)
  model = models.init_policy(CFG, seed=3, precision=adapted)
  assert all(not v.any() for p, v in _leaves(model).items() if p[-1] == "lora_b")  # B = 0
  logits = _logits(model, _ids())
  base_logits = _logits(models.init_policy(CFG, seed=3, precision=base), _ids())
  # Equal up to float32 reassociation: the extra (zero) product changes how XLA fuses the sums.
  np.testing.assert_allclose(logits, base_logits, rtol=0, atol=1e-6)
  # Built directly, the base is still the plain decoder's draw and B = 0.
  direct = models.Decoder(CFG, rngs=nnx.Rngs(3), precision=adapted)
  np.testing.assert_array_equal(_logits(direct, _ids()), logits)


def test_a_direct_build_holds_what_the_transforms_produce():
  direct = _leaves(models.Decoder(CFG, rngs=nnx.Rngs(3), precision=LORA))
  transformed = _leaves(
    precision.quantize_base(nnx.state(models.Decoder(CFG, rngs=nnx.Rngs(3))), LORA)
  )
  adapters = {p for p in direct if p[-1] in ("lora_a", "lora_b")}
  _assert_same({p: v for p, v in direct.items() if p not in adapters}, transformed)


def test_graph_definitions_come_from_the_constructor_alone():
  kw = dict(precision=LORA, remat="full", heads=HEADS)
  built = nnx.split(models.init_policy(CFG, seed=1, **kw))[0]
  assert built == nnx.split(models.Decoder(CFG, rngs=nnx.Rngs(5), **kw))[0]
  assert built == nnx.split(models.abstract_policy(CFG, **kw))[0]
  model = models.init_policy(CFG, seed=1, **kw)
  assert models.policy_graphdef(model, model.precision) == nnx.split(model)[0]
  # Everything that changes the computation is in the graph definition.
  for other in (
    dict(kw, remat="none"),
    dict(kw, heads=models.HeadsConfig()),
    dict(kw, precision=precision.PrecisionPolicy()),
  ):
    assert nnx.split(models.abstract_policy(CFG, **other))[0] != built


def _assigns_outside_init(path):
  """Attribute assignments in a module's source other than `self.x = ...` inside `__init__`."""
  tree = ast.parse(open(path).read())
  found = []

  def visit(node, function):
    if isinstance(node, (ast.FunctionDef, ast.Lambda)):
      function = getattr(node, "name", "<lambda>")
    targets = []
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for target in targets:
      for t in target.elts if isinstance(target, ast.Tuple) else [target]:
        if isinstance(t, ast.Attribute):
          on_self = isinstance(t.value, ast.Name) and t.value.id == "self"
          if not (on_self and function == "__init__"):
            found.append(f"{os.path.basename(path)}:{t.lineno}")
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
      found.append(f"{os.path.basename(path)}:{node.lineno} setattr")
    for child in ast.iter_child_nodes(node):
      visit(child, function)

  visit(tree, None)
  return found


def test_nothing_sets_an_attribute_on_a_built_module():
  for package in ("models", "precision"):
    folder = os.path.join(REPO, "grpojax", package)
    for name in sorted(os.listdir(folder)):
      if name.endswith(".py"):
        assert not _assigns_outside_init(os.path.join(folder, name)), name


def test_abstract_policy_allocates_nothing():
  abstract = models.abstract_policy(CFG, dtype=jnp.bfloat16, precision=LORA, heads=HEADS)
  leaves = [v.get_value() for _, v in nnx.to_flat_state(nnx.state(abstract))]
  assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  concrete = _leaves(
    models.init_policy(CFG, seed=0, dtype=jnp.bfloat16, precision=LORA, heads=HEADS)
  )
  shapes = {
    p: (v.get_value().shape, v.get_value().dtype) for p, v in nnx.to_flat_state(nnx.state(abstract))
  }
  assert shapes == {p: (v.shape, v.dtype) for p, v in concrete.items()}


def test_activation_sharding_is_a_constructor_argument():
  auto = (jax.sharding.AxisType.Auto,)
  mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2], axis_types=auto)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  pinned = models.init_policy(CFG, seed=0, activation_sharding=sharding)
  free = models.init_policy(CFG, seed=0)
  assert pinned.activation_sharding == sharding
  assert nnx.split(pinned)[0] != nnx.split(free)[0]
  np.testing.assert_allclose(_logits(pinned, _ids()), _logits(free, _ids()), rtol=1e-6, atol=1e-6)


def test_from_pretrained_applies_the_policy_and_adds_heads(hf_checkpoint):
  _, path = hf_checkpoint("qwen3")
  plain = models.from_pretrained(path)
  policy = models.from_pretrained(path, precision=LORA, heads=HEADS, remat="dots", seed=4)
  cfg = models.load_config(path)
  assert policy.remat == "dots" and policy.precision == LORA
  want = _leaves(precision.quantize_base(nnx.state(plain), LORA))
  got = _leaves(policy, decoder_only=True)
  _assert_same({p: v for p, v in got.items() if p[-1] not in ("lora_a", "lora_b")}, want)
  # Heads are not in the checkpoint: they start as a random policy's with the same seed.
  random = models.init_policy(cfg, seed=4, heads=HEADS)
  _assert_same(_leaves(policy.heads), _leaves(random.heads))
  abstract = models.abstract_pretrained(path, precision=LORA, heads=HEADS, remat="dots")
  assert nnx.split(abstract)[0] == nnx.split(policy)[0]


def test_export_params_are_the_plain_decoders(hf_checkpoint):
  _, path = hf_checkpoint("qwen3")
  model = models.from_pretrained(path, heads=HEADS)
  exported = models.export_params(model)
  assert "heads" not in exported  # heads are not part of a Hugging Face checkpoint
  _assert_same(_leaves(exported), _leaves(models.from_pretrained(path)))
  assert build.heads_config(model) == HEADS


def _grpojax_imports(path):
  """(module imported, whether at module top) for every grpojax import in a source file."""
  tree = ast.parse(open(path).read())
  top = {id(node) for node in tree.body}
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grpojax"):
      names = [f"{node.module}.{a.name}" for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names if a.name.startswith("grpojax")]
    else:
      continue
    found += [(name, id(node) in top) for name in names]
  return found


def test_imports_run_one_way():
  # precision imports nothing of grpojax but types; models adds precision; all at module top.
  allowed = {"precision": ("grpojax.types", "grpojax.precision")}
  allowed["models"] = (*allowed["precision"], "grpojax.models")
  for package, prefixes in allowed.items():
    folder = os.path.join(REPO, "grpojax", package)
    for name in sorted(os.listdir(folder)):
      if not name.endswith(".py"):
        continue
      for module, at_top in _grpojax_imports(os.path.join(folder, name)):
        assert at_top, f"{package}/{name}: function-local import of {module}"
        assert module.startswith(prefixes), (name, module)
