"""Imports run one way, leaf to root, and none hides in a function body.

  types, preflight -> parallel, precision, tasks, checkpoint, metrics, run_records, console
        -> models -> sampling -> objectives -> rl -> train, dry_run, main, eval_run -> evaluate

A module may import grpojax modules of a strictly lower layer, or of its own package. An import
of grpojax inside a function (the usual way to dodge a cycle) fails too.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "grpojax"

LAYERS = {
  "types": 0,
  "preflight": 0,
  "parallel": 1,
  "precision": 1,
  "tasks": 1,
  "checkpoint": 1,
  "metrics": 1,
  "run_records": 1,
  "console": 1,
  "models": 2,
  "sampling": 3,
  "objectives": 4,
  "rl": 5,
  "train": 6,
  "dry_run": 7,
  "main": 7,
  "eval_run": 7,
  "evaluate": 8,
}


def _unit(module: str) -> str:
  """'grpojax.models.heads' -> 'models'; 'grpojax' -> ''."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _modules():
  for path in sorted(PACKAGE.rglob("*.py")):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    name = ".".join(rel.parts)
    if name.endswith(".__init__"):
      name = name[: -len(".__init__")]
    yield name, path


def _imports(tree):
  """(imported grpojax module, line, inside a function?) for every import in `tree`."""
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if isinstance(child, ast.Import):
        for alias in child.names:
          if alias.name.split(".")[0] == "grpojax":
            found.append((alias.name, child.lineno, in_function))
      elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
        if child.module.split(".")[0] == "grpojax":
          for alias in child.names:
            found.append((f"{child.module}.{alias.name}", child.lineno, in_function))
      visit(child, nested)

  visit(tree, False)
  return found


def test_every_unit_has_a_layer():
  units = {_unit(name) for name, _ in _modules()} - {""}
  assert units <= set(LAYERS), f"give these a layer: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize("module,path", list(_modules()), ids=lambda x: str(x))
def test_imports_run_one_way(module, path):
  unit = _unit(module)
  tree = ast.parse(path.read_text(), filename=str(path))
  bad = []
  for target, line, in_function in _imports(tree):
    target_unit = _unit(target)
    if target_unit not in LAYERS:  # e.g. `from grpojax import models` names a unit itself
      target_unit = target.split(".")[-1] if target.count(".") == 1 else target_unit
    if in_function:
      bad.append(f"line {line}: function-local import of {target}")
    elif unit and target_unit != unit and LAYERS.get(target_unit, 99) >= LAYERS[unit]:
      bad.append(
        f"line {line}: {unit} (layer {LAYERS[unit]}) imports {target} (layer "
        f"{LAYERS.get(target_unit)})"
      )
  assert not bad, f"{module}:\n" + "\n".join(bad)
