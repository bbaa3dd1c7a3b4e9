"""Epochs and learning rate for a dataset's size, from the training guides' table:

    rows          epochs   learning rate
    < 500         8-10     1e-5
    500-2000      5-8      1e-5
    2000-5000     3-5      5e-6
    > 5000        2-3      5e-6

(The learning rates are the guides' for full fine-tuning; LoRA usually trains at 1e-4-2e-4.)
`python -m sft_sweep.data check` prints the row for the data; `trainer=auto_by_size` (trainer.by_data_size:
true) applies it once the data's row count is known, over the epochs and learning rate of any preset.
"""

from sft_sweep.errors import UserError

TABLE = [(500, (8, 10), 1e-5), (2000, (5, 8), 1e-5), (5000, (3, 5), 5e-6), (None, (2, 3), 5e-6)]


def recommend(rows: int) -> dict:
    for limit, (low, high), lr in TABLE:
        if limit is None or rows < limit:
            return {"epochs": (low, high), "num_train_epochs": (low + high) // 2, "learning_rate": lr}
    raise AssertionError("unreachable")


def describe(rows: int) -> str:
    r = recommend(rows)
    return (f"recommended for {rows} training rows: {r['epochs'][0]}-{r['epochs'][1]} epochs at learning rate "
            f"{r['learning_rate']:g} (trainer=auto_by_size applies num_train_epochs={r['num_train_epochs']}, "
            f"optim.learning_rate={r['learning_rate']:g})")


def apply(c: dict, rows: int) -> list[str]:
    """With trainer.by_data_size: set the run's epochs and learning rate; returns what it set, for the log."""
    if not c["trainer"].get("by_data_size"):
        return []
    if c["trainer"].get("max_steps", -1) > 0:
        raise UserError(f"trainer.by_data_size=true with trainer.max_steps={c['trainer']['max_steps']}: max_steps "
                        f"would override the epochs; set trainer.max_steps=-1")
    r = recommend(rows)
    c["trainer"]["num_train_epochs"], c["optim"]["learning_rate"] = r["num_train_epochs"], r["learning_rate"]
    return [f"trainer.num_train_epochs={r['num_train_epochs']}", f"optim.learning_rate={r['learning_rate']:g}"]
