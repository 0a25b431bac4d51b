"""Device meshes, logical-axis sharding rules and sharded step functions.

`mesh` builds a `jax.sharding.Mesh` from config; `rules` maps parameter paths to logical axes and
logical axes to mesh axes, giving `NamedSharding`s for parameters, optimiser state and batches;
`steps` re-jits the trainer's step functions with those shardings as `in_shardings`/`out_shardings`.
"""
