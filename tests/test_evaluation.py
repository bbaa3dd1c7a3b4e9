"""Evaluation of real runs: standalone evaluate, merge/export equality, chat driven as a terminal."""

import json
import os
import subprocess
import sys

import pexpect
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from sft_sweep import trained
from sft_sweep.config import asset_path
from sft_sweep.evaluate import main as evaluate_cli
from sft_sweep.export import main as export_cli
from sft_sweep.generation import generate
from sft_sweep.run_dir import RunDir
from tests.helpers import REPO

PROBES = [[{"role": "user", "content": q}] for q in
          ["Give me an 1-sentence introduction of LLM.", "Calculate 1+1-1",
           "What's the difference between thread and process?",
           "Classify the sentiment of this review and answer in JSON: The pizza was great."]]


@pytest.fixture
def run(tiny_run):
    return tiny_run


@pytest.mark.slow
def test_run_records_evaluation(run):
    m = json.loads((run / "metrics.json").read_text())
    assert m["eval_perplexity"] > 1 and m["eval_n_samples"] == 16  # the 16-row eval set
    assert m["before_eval_n_samples"] == 16  # the base model's answers, named before_<name>
    # every answer keeps the scores it was given, once
    sample = json.loads((run / "eval_samples.jsonl").read_text().splitlines()[0])
    assert {"exact", "json_valid", "json_keys", "usable"} <= set(sample)
    table = (run / "probes.md").read_text()
    probes = json.loads((run / "run_manifest.json").read_text())["config"]["eval"]["probes"]
    assert table.count("\n") == 2 + len(probes)  # a header, its rule, a row per probe
    assert "| Anna has 3 pens and gets 4 more. How many pens does Anna have now? |" in table
    # a conversation probe shows its turns
    assert "| Ben has 5 cards and gets 2 more. How many cards does Ben have now? / 7 / What is that times 2? |" in table
    assert len((run / "eval_samples.jsonl").read_text().splitlines()) == 16


@pytest.mark.slow
def test_evaluate_run_dir_reproduces_the_runs_metrics(run, capsys):
    assert evaluate_cli([f"run_dir={run}"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    m = json.loads((run / "metrics.json").read_text())
    # the same names as the run's metrics.json
    assert result["eval_perplexity"] == pytest.approx(m["eval_perplexity"], rel=1e-5)
    assert result["eval_json_validity"] == m["eval_json_validity"] and result["eval_usability"] == m["eval_usability"]
    assert "eval_perplexity:" in capsys.readouterr().out
    # on other data: beside the run's own evaluation, never over it
    own = (run / "evaluation.json").read_text()
    assert evaluate_cli([f"run_dir={run}", "data=alpaca", "eval.max_samples=4"]) == 0
    other = json.loads((run / "evaluation-data=alpaca,eval.max_samples=4.json").read_text())
    assert other["eval_n_samples"] == 4 and other["overrides"] == ["data=alpaca", "eval.max_samples=4"]
    assert len((run / "evaluation_samples-data=alpaca,eval.max_samples=4.jsonl").read_text().splitlines()) == 4
    assert (run / "evaluation.json").read_text() == own


def test_evaluate_a_base_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert evaluate_cli(["data=sample", "eval.max_samples=20"]) == 0
    result = json.loads(next(tmp_path.glob("outputs/eval/*/evaluation.json")).read_text())
    assert result["eval_perplexity"] > 500 and result["eval_json_validity"] == 0.0 and result["eval_n_samples"] == 20
    assert evaluate_cli(["run_dir=/nope"]) == 2


@pytest.mark.slow
def test_merged_model_answers_like_the_adapter(run):
    assert export_cli([f"run_dir={run}", "dtype=float32"]) == 0
    adapter_model, tokenizer = trained.load(RunDir(run), "float32")
    merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    a = generate(adapter_model, tokenizer, PROBES, max_new_tokens=24)
    b = generate(merged, AutoTokenizer.from_pretrained(run / "merged"), PROBES, max_new_tokens=24)
    assert [x["prediction"] for x in a] == [x["prediction"] for x in b]
    assert any(x["prediction"] for x in a)


@pytest.mark.slow
def test_chat_in_a_terminal(run):
    child = pexpect.spawn(sys.executable, ["-m", "sft_sweep.chat", f"run_dir={run}", "max_new_tokens=24"],
                          cwd=str(REPO), encoding="utf-8", timeout=120, env={"HF_HUB_OFFLINE": "1",
                                                                             "PATH": "/usr/bin:/bin"})
    child.expect("probe> Anna has 3 pens and gets 4 more")  # the run's own probes (the tiny preset's)
    child.expect("probe> Ben has 5 cards and gets 2 more.* / 7 / What is that times 2")
    child.expect("you> ")
    child.sendline("Classify the sentiment of this review and answer in JSON: The pizza was great.")
    child.expect("model> ")
    child.expect("you> ")
    first = child.before
    child.sendline("/reset")
    child.expect("conversation cleared")
    child.expect("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and first.strip()


@pytest.mark.parametrize("thinking", [False, True])
def test_chat_asks_with_the_template_settings_the_run_was_evaluated_with(thinking, tmp_path):
    """chat (and export's template defaults) render the run's own eval.enable_thinking, not a fixed setting."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"eval": {"enable_thinking": thinking}}))
    tokenizer = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    kwargs = trained.template_kwargs(RunDir(tmp_path), tokenizer.chat_template)
    assert kwargs == {"enable_thinking": thinking}
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False,
                                           add_generation_prompt=True, **kwargs)
    assert prompt.endswith("<|im_start|>assistant\n" + ("" if thinking else "<think>\n\n</think>\n\n"))
    assert trained.template_kwargs(RunDir(tmp_path), "{{ messages }}") == {}  # a template that reads no such setting


@pytest.mark.slow
def test_ctrl_c_in_chat_quits_without_a_traceback(run):
    child = pexpect.spawn(sys.executable, ["-m", "sft_sweep.chat", f"run_dir={run}", "probes=false"],
                          cwd=str(REPO), encoding="utf-8", timeout=120, env={"HF_HUB_OFFLINE": "1",
                                                                             "PATH": "/usr/bin:/bin"})
    child.expect("you> ")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before


@pytest.mark.slow
def test_forgetting_check_measures_general_chat_before_and_after(run):
    from sft_sweep.evaluation import general_perplexity

    m = json.loads((run / "metrics.json").read_text())
    assert m["forgetting_delta"] == m["eval_general_perplexity"] - m["before_eval_general_perplexity"]
    # the baseline is the untrained base model's perplexity on the shipped general sample
    general = str(REPO / "sft_sweep/assets/general/eval.jsonl")
    model, tokenizer = trained.load(RunDir(run))
    with model.disable_adapter():
        before = general_perplexity(model, tokenizer, general, 256, 16)
    assert before == pytest.approx(m["before_eval_general_perplexity"], rel=1e-4)
    assert general_perplexity(model, tokenizer, general, 256, 16) == pytest.approx(m["eval_general_perplexity"],
                                                                                    rel=1e-4)


MEMORY = """
import resource, sys, torch
from datasets import Dataset
from transformers import AutoConfig, AutoModelForCausalLM
from sft_sweep.evaluation import perplexity
from sft_sweep.packing import BlockDiagonalCollator
torch.manual_seed(0)
config = AutoConfig.for_model("qwen3", vocab_size=151669, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16)
model = AutoModelForCausalLM.from_config(config).eval()
rows = torch.randint(0, 151669, (8, 1024)).tolist()
data = Dataset.from_dict({"input_ids": rows, "assistant_masks": [[1] * 1024] * 8})
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()
value = perplexity(model, data, BlockDiagonalCollator(0), batch_size=8)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(value, before, peak)
"""


@pytest.mark.slow
def test_perplexity_on_a_real_vocabulary_stays_in_bounded_memory():
    """A 151,669-token vocabulary (Qwen3's), one batch of 8 x 1024 trained positions: full logits would be 5 GB,
    with their log-softmax copy 10 GB. Scored in chunks of trained positions, it needs well under 1.5 GB more."""
    proc = subprocess.run([sys.executable, "-c", MEMORY], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    value, before, peak = proc.stdout.split()[-3:]
    assert 1e4 < float(value) < 1e7  # a random model's perplexity: about the vocabulary's size
    assert int(peak) - int(before) < 1.5 * 2**30, (int(peak) - int(before)) / 2**30


def test_benchmarks_before_without_benchmarks_runs_none():
    """eval.benchmarks_before=true with no eval.benchmarks: nothing to run before training, and no error."""
    from types import SimpleNamespace

    from sft_sweep.evaluation import Evaluation

    cfg = {"enabled": True, "general_path": None, "before_training": False, "benchmarks": [],
           "benchmarks_before": True}
    evaluation = Evaluation(cfg, SimpleNamespace(eval_dataset=[0]), [])
    evaluation.before()
    assert evaluation.before_scores == {} and evaluation.before_benchmarks is None
