"""Epochs and learning rate for a dataset's size, from the training guides' table:

    rows          epochs   learning rate
    < 500         8-10     1e-5
    500-2000      5-8      1e-5
    2000-5000     3-5      5e-6
    > 5000        2-3      5e-6

The learning rates are the guides' for full fine-tuning (lora=none), and apply as they are there. A LoRA
adapter trains at a rate ~10-20x higher (and a random-init model, the tiny preset, higher still), so with
LoRA the table scales the preset's own rate instead, as it scales the full-fine-tuning one: unchanged below
2,000 rows, halved from there (1e-5 -> 5e-6).
`python -m sft_sweep.data check` prints the row for the data; `trainer=auto_by_size` (trainer.by_data_size:
true) applies it once the data's row count is known, over the epochs and learning rate of any preset.
"""

from sft_sweep.errors import UserError

TABLE = [(500, (8, 10), 1e-5), (2000, (5, 8), 1e-5), (5000, (3, 5), 5e-6), (None, (2, 3), 5e-6)]
TOP_RATE = 1e-5  # the table's rate for small data: a LoRA run's preset rate scales by rate / TOP_RATE


def recommend(rows: int) -> dict:
    for limit, (low, high), lr in TABLE:
        if limit is None or rows < limit:
            return {"epochs": (low, high), "num_train_epochs": (low + high) // 2, "learning_rate": lr}
    raise AssertionError("unreachable")


def learning_rate(rows: int, lora: bool, preset_rate: float) -> float:
    """The table's rate (full fine-tuning), or the preset's LoRA rate scaled as the table scales."""
    table = recommend(rows)["learning_rate"]
    return preset_rate * table / TOP_RATE if lora else table


def describe(rows: int, lora: bool = False, preset_rate: float | None = None) -> str:
    r = recommend(rows)
    rate = learning_rate(rows, lora, preset_rate) if lora and preset_rate else r["learning_rate"]
    how = (f"; with LoRA, the preset's rate {preset_rate:g} x{r['learning_rate'] / TOP_RATE:g}" if lora and preset_rate
           else "")
    return (f"recommended for {rows} training rows: {r['epochs'][0]}-{r['epochs'][1]} epochs at learning rate "
            f"{r['learning_rate']:g} for full fine-tuning (trainer=auto_by_size applies num_train_epochs="
            f"{r['num_train_epochs']}, optim.learning_rate={rate:g}{how})")


def apply(c: dict, rows: int) -> dict:
    """With trainer.by_data_size: set the run's epochs and learning rate. Returns what it set, for the log and the
    run's manifest: {dotted key: {"composed": the config's value, "trained": the value set, "why": ...}}."""
    if not c["trainer"].get("by_data_size"):
        return {}
    if c["trainer"].get("max_steps", -1) > 0:
        raise UserError(f"trainer.by_data_size=true with trainer.max_steps={c['trainer']['max_steps']}: max_steps "
                        f"would override the epochs; set trainer.max_steps=-1")
    r, preset = recommend(rows), c["optim"]["learning_rate"]
    rate = learning_rate(rows, bool(c["lora"]), preset)
    why = f"trainer=auto_by_size, {rows} training rows"
    applied = {"trainer.num_train_epochs": {"composed": c["trainer"].get("num_train_epochs"),
                                            "trained": r["num_train_epochs"], "why": why},
               "optim.learning_rate": {"composed": preset, "trained": rate, "why": why + (
                   f"; LoRA: the preset's rate x{rate / preset:g}, as the full fine-tuning table scales"
                   if c["lora"] else "")}}
    c["trainer"]["num_train_epochs"], c["optim"]["learning_rate"] = r["num_train_epochs"], rate
    return applied
