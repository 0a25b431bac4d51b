"""The LLM judge: its strict score grammar on adversarial generations, rubric checks, batched
greedy judging through grpojax's sampler (on one device and on the mesh), and too-long prompts."""

import jax
import numpy as np
import pytest

from grpojax import models, sampling
from grpojax.models import char_tokenizer
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import judge as judge_lib


@pytest.mark.parametrize(
  "text,score",
  [
    ("The response is right.\nScore: 7", 7),
    ("Score: 0", 0),
    ("  reasoning...\n\nScore:10  \n\n", 10),  # blank lines and spaces around are fine
    ("Score: +3", 3),
  ],
)
def test_parses_a_single_final_score_line(text, score):
  assert judge_lib.parse_score(text, lo=0, hi=10) == judge_lib.Verdict(score, "")


@pytest.mark.parametrize(
  "text,reason",
  [
    ("", "empty"),
    ("   \n\n  ", "empty"),
    ("Score: 3\nScore: 10", "2 lines mention a score"),  # two verdicts: neither is read
    ("My score: 2 was too low.\nScore: 9", "2 lines mention a score"),
    ("Score: 11", "outside [0, 10]"),
    ("Score: -1", "outside [0, 10]"),
    ("Score: seven", "last line"),
    ("Score: 7.5", "last line"),
    ("Score: 7/10", "last line"),
    ("Score: 7 because it is fine", "last line"),
    ("Score: 8\nThanks for reading.", "last line"),
    ("score: 8", "last line"),  # the grammar's keyword is case-sensitive
    ("The answer deserves an 8.", "last line"),
    ("Score: 99999999999999999999", "last line"),
  ],
)
def test_unparsable_outputs_name_the_reason(text, reason):
  verdict = judge_lib.parse_score(text, lo=0, hi=10)
  assert verdict.score is None
  assert reason in verdict.reason


def test_rubric_checks():
  judge_lib.check_rubric(judge_lib.DEFAULT_RUBRIC)
  judge_lib.check_rubric("Rate {completion} from {lo} to {hi}.")  # reference-free
  with pytest.raises(ValueError, match="unknown field"):
    judge_lib.check_rubric("{completion} {answer}")
  with pytest.raises(ValueError, match="must hold"):
    judge_lib.check_rubric("Rate {prompt}")
  with pytest.raises(ValueError, match="format template"):
    judge_lib.check_rubric("{completion")


def test_judge_prompt_fills_every_field():
  text = judge_lib.judge_prompt(
    "{prompt}|{completion}|{reference}|{lo}-{hi}",
    prompt="p",
    completion="c",
    reference="r",
    lo=1,
    hi=5,
  )
  assert text == "p|c|r|1-5"


def _tiny_judge(**kwargs):
  tok = char_tokenizer.CharTokenizer("0123456789+-=?: abcdefghijklmnopqrstuvwxyzS\n")
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=tok.vocab_size,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=16,
  )
  model = models.init_policy(cfg, seed=0)
  kw = dict(
    rubric="{completion}?", max_new_tokens=6, max_prompt_len=16, batch_size=2, chat_template=False
  )
  kw.update(kwargs)
  return judge_lib.Judge(model, tok, **kw), model, tok


def test_judge_generates_greedily_with_the_sampler():
  judge, model, tok = _tiny_judge(batch_size=1)
  prompts = [tok.encode("1+1?"), tok.encode("22?"), tok.encode("3?")]  # 3 batches of 1

  def greedy(prompt):  # the sampler's own greedy decoding of one prompt
    out = sampling.generate(
      model,
      [prompt],
      key=jax.random.key(7),
      max_new_tokens=6,
      temperature=0.0,
      eos_ids=tok.eos_ids,
      pad_id=tok.pad_id,
    )
    return tok.decode(np.asarray(out.tokens)[0, : int(np.asarray(out.mask)[0].sum())].tolist())

  texts = judge.generate(prompts)
  assert texts == [greedy(p) for p in prompts]


def test_judge_rewards_and_fallback(monkeypatch):
  judge, _, _ = _tiny_judge(lo=1, hi=5, fallback=-0.5)
  outputs = ["ok\nScore: 5", "Score: 1", "Score: 3\nScore: 5", "", "Score: 6"]
  monkeypatch.setattr(judge, "generate", lambda ids: outputs[: len(ids)])
  rewards, metrics = judge(["q"] * 5, ["a", "b", "c", "d", "e"], ["r"] * 5)
  # (5-1)/4 = 1, (1-1)/4 = 0, then three unparsable verdicts at the fallback.
  np.testing.assert_allclose(rewards, [1.0, 0.0, -0.5, -0.5, -0.5])
  assert metrics == {"unparsed": 3.0, "too_long": 0.0}


def test_a_random_judge_falls_back_and_counts():
  judge, _, _ = _tiny_judge(fallback=0.25)
  rewards, metrics = judge(["1+1="], ["2"], ["2"])
  # A random model writes no "Score: n" line in 6 characters.
  np.testing.assert_allclose(rewards, [0.25])
  assert metrics == {"unparsed": 1.0, "too_long": 0.0}


def test_an_overlong_judge_prompt_names_the_item():
  judge, _, _ = _tiny_judge(on_too_long="raise")
  with pytest.raises(ValueError, match=r"item 1 .*'x{20}'.*max_prompt_len=16"):
    judge(["q", "q"], ["ok", "x" * 20], ["r", "r"])


def test_an_overlong_judge_prompt_falls_back_counted_and_named(monkeypatch, caplog):
  judge, _, tok = _tiny_judge(lo=0, hi=4, fallback=-1.0)  # on_too_long="fallback" by default
  judged = []

  def generate(ids):
    judged.extend(ids)
    return ["Score: 1", "Score: 4"][: len(ids)]

  monkeypatch.setattr(judge, "generate", generate)
  with caplog.at_level("WARNING"):
    rewards, metrics = judge(["q"] * 3, ["ok", "x" * 20, "no"], ["r"] * 3)
  # Items 0 and 2 are judged, 1/4 and 4/4; item 1 ("x"*20 + "?" = 21 > 16 tokens) falls back.
  assert judged == [tok.encode("ok?"), tok.encode("no?")]
  np.testing.assert_allclose(rewards, [0.25, -1.0, 1.0])
  assert metrics == {"unparsed": 0.0, "too_long": 1.0}
  named = [r for r in caplog.records if "item 1 " in r.getMessage()]
  assert len(named) == 1 and "max_prompt_len=16" in named[0].getMessage()
  assert not any("item 0 " in r.getMessage() or "item 2 " in r.getMessage() for r in caplog.records)


def test_judge_on_the_mesh_matches_one_device(monkeypatch):
  one, model, tok = _tiny_judge(batch_size=2)
  layout = layout_lib.Layout(mesh_lib.make_mesh({"data": 4, "tensor": 2}))
  sharded = judge_lib.Judge(
    model,
    tok,
    rubric="{completion}?",
    max_new_tokens=6,
    max_prompt_len=16,
    batch_size=2,
    chat_template=False,
    layout=layout,
  )
  prompts = [tok.encode(t) for t in ("1+1?", "22?", "3?", "a b?", "7=7?")]
  want = one.generate(prompts)
  seen = []
  sample = sampling.sample

  def spy(graphdef, params, tokens, mask, key, **kw):
    seen.append(tokens)
    return sample(graphdef, params, tokens, mask, key, **kw)

  monkeypatch.setattr(sampling, "sample", spy)
  assert sharded.generate(prompts) == want
  # 2 rows round up to 4 (split 4 ways over "data"): 5 prompts in 2 calls of 1 row per device.
  assert sharded.batches.rows == 4 and len(seen) == 2
  for tokens in seen:
    assert len(tokens.sharding.device_set) == 8
    assert {s.data.shape[0] for s in tokens.addressable_shards} == {1}
