"""A task, a reward and a recipe of a user's own, outside grpojax, named by import path in
`examples/config.py`."""
