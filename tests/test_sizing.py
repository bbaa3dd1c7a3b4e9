"""Epochs and learning rate by data size (the training guides' table): the table's edges, `data check`'s line,
and trainer=auto_by_size setting them on a real trainer over the preset's values."""

import pytest

from sft_sweep.data.__main__ import main as data_cli
from sft_sweep.errors import UserError
from sft_sweep.recipe import setup
from sft_sweep.run_dir import RunDir
from sft_sweep.sizing import recommend
from tests.helpers import TINY, plain


@pytest.mark.parametrize("rows, epochs, lr", [(1, 9, 1e-5), (499, 9, 1e-5), (500, 6, 1e-5), (1999, 6, 1e-5),
                                              (2000, 4, 5e-6), (4999, 4, 5e-6), (5000, 2, 5e-6), (10**6, 2, 5e-6)])
def test_table_edges(rows, epochs, lr):
    r = recommend(rows)
    assert (r["num_train_epochs"], r["learning_rate"]) == (epochs, lr)


def test_data_check_prints_the_recommendation(capsys):
    assert data_cli(["check", "data=sample_with_general"]) == 0
    out = capsys.readouterr().out
    # 2,157 task rows + 80 general rows resampled to 90%, 10% held out: 1,811 training rows
    assert "source general: 80 valid" in out
    assert ("recommended for 1811 training rows: 5-8 epochs at learning rate 1e-05 for full fine-tuning "
            "(trainer=auto_by_size applies num_train_epochs=6, optim.learning_rate=0.005; with LoRA, the preset's rate "
            "0.005 x1)") in out
    assert data_cli(["check", "data=sample_with_general", "lora=none", "model=qwen3_4b",
                     "model.tokenizer=${asset:tiny_tokenizer}"]) == 0
    assert "optim.learning_rate=1e-05)" in capsys.readouterr().out  # full fine-tuning: the table's own rate


def test_auto_by_size_sets_epochs_and_learning_rate_over_the_preset(tmp_path):
    overrides = [o for o in TINY if not o.startswith("trainer.max_steps")]
    c = plain(*overrides, "trainer=auto_by_size")
    assert c["trainer"]["num_train_epochs"] == 7 and c["optim"]["learning_rate"] == 5e-3  # the tiny preset's
    trainer, _ = setup(c, RunDir(tmp_path))
    assert len(trainer.train_dataset) == 2141  # 2,157 rows less the 16 held out
    # LoRA: the preset's rate, halved as the table halves its rate from 2,000 rows (not the full fine-tuning 5e-6)
    assert trainer.args.num_train_epochs == 4 and trainer.args.learning_rate == 2.5e-3
    with pytest.raises(UserError, match="trainer.by_data_size=true with trainer.max_steps=12"):
        setup(plain(*TINY, "trainer=auto_by_size", "trainer.max_steps=12"), RunDir(tmp_path / "b"))


@pytest.mark.slow
def test_an_auto_by_size_runs_manifest_records_what_trained_and_reproduce_trains_it_again(tmp_path, monkeypatch):
    """The manifest's config is the trained one (epochs and learning rate set from the data's size), with what was
    composed beside it; .hydra/config.yaml keeps the composed config, from which reproduce sets the same again."""
    import json

    from sft_sweep.reproduce import main as reproduce
    from sft_sweep.sizing import learning_rate
    from tests.helpers import run_cli

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                                     {"role": "assistant", "content": str(i + 1)}]}) + "\n"
                            for i in range(40)))
    args = ["trainer=auto_by_size", "data=local", f"data.path={rows}", "data.min_val_size=4", "trainer.packing=false",
            "trainer.per_device_train_batch_size=8", "trainer.logging_steps=1", "eval.enabled=false"]
    assert run_cli(f"hydra.run.dir={tmp_path / 'run'}", *args) == 0
    manifest = json.loads((tmp_path / "run" / "run_manifest.json").read_text())
    epochs, rate = recommend(36)["num_train_epochs"], learning_rate(36, True, 5e-3)  # 40 rows, 4 held out
    assert (manifest["config"]["trainer"]["num_train_epochs"], manifest["config"]["optim"]["learning_rate"]) == (
        epochs, rate)
    assert manifest["set_at_run_time"]["trainer.num_train_epochs"] == {
        "composed": 7, "trained": epochs, "why": "trainer=auto_by_size, 36 training rows"}
    assert manifest["set_at_run_time"]["optim.learning_rate"]["composed"] == 5e-3
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    assert round(history[-1]["epoch"]) == epochs and max(h.get("learning_rate", 0) for h in history) <= rate
    monkeypatch.chdir(tmp_path)  # reproduce writes outputs/runs/<time>/ here
    assert reproduce([str(tmp_path / "run")]) == 0
    [again] = (tmp_path / "outputs" / "runs").iterdir()
    assert json.loads((again / "run_manifest.json").read_text())["config"]["optim"] == manifest["config"]["optim"]
