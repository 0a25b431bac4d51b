"""The trainer's step functions re-jitted with explicit shardings and donation.

`grpojax.rl.steps.build` jits its functions without shardings; given sharded inputs, XLA
propagates the layout (the tests check that the updated parameters keep theirs). This module pins
the layout instead, as `in_shardings`/`out_shardings`, so that a step can be lowered for a target
mesh without real inputs and the parameters and optimiser state are donated in `update`. The
Python functions are the same ones `build` wrapped (`__wrapped__` of each `jax.jit`), so the
sharded and unsharded programs compute the same function.
"""

import jax
from flax import nnx

from grpojax.parallel import rules as rules_lib
from grpojax.rl import steps as rl_steps


def sharded_steps(
  fns: rl_steps.StepFns,
  *,
  mesh: jax.sharding.Mesh,
  param_shardings,
  opt_shardings,
  rules: rules_lib.Rules = rules_lib.DEFAULT_RULES,
  trainable=nnx.Param,
) -> rl_steps.StepFns:
  """`fns` with every function re-jitted for `mesh`.

  Args:
    fns: the result of `grpojax.rl.steps.build`.
    mesh: the training mesh.
    param_shardings: `rules.param_shardings(params, mesh)`; gradients use the same layout.
    opt_shardings: `rules.param_shardings(opt_state, mesh)`.
    rules: supplies the batch layout (`rules.batch_sharding`).
    trainable: the filter `fns` was built with; gradients take the layout of that part.

  Returns:
    A `StepFns` with the same signatures: sequences and loss batches split over the batch axes,
    scalars, metrics, keys and the objective state replicated; `update` donates its parameters
    and optimiser state (do not reuse them after the call).
  """
  data = rules_lib.batch_sharding(mesh, rules)
  grads = rl_steps.split_trainable(param_shardings, trainable)[0]
  rep = rules_lib.replicated(mesh)

  def rejit(fn, in_shardings, out_shardings, donate_argnums=()):
    return jax.jit(
      fn.__wrapped__,
      in_shardings=in_shardings,
      out_shardings=out_shardings,
      donate_argnums=donate_argnums,
    )

  return rl_steps.StepFns(
    graphdef=fns.graphdef,
    score=rejit(fns.score, (param_shardings, data), (data, data)),
    grad=rejit(fns.grad, (param_shardings, data, data, rep, rep), (grads, rep, rep, rep, rep)),
    grad_on_policy=rejit(
      fns.grad_on_policy,
      (param_shardings, data, data, rep, rep),
      (grads, rep, rep, rep, rep, data, data),
    ),
    update=rejit(
      fns.update,
      (param_shardings, opt_shardings, grads, rep),
      (param_shardings, opt_shardings, rep, rep),
      donate_argnums=(0, 1),
    ),
    sft_grad=rejit(fns.sft_grad, (param_shardings, data), (grads, rep, rep)),
  )
