"""Data tools, on the same composed config as training.

    python -m sft_sweep.data check path/to/file.jsonl        # or: check data=mixture
    python -m sft_sweep.data check cmath.jsonl data.format=mapping 'data.field_map={input: user, golden: assistant}'
    python -m sft_sweep.data prepare data=mixture             # write the prepared folder, print it
    python -m sft_sweep.data inspect data=sample model=tiny n=3   # rendered samples, trained tokens marked
"""

import math
import statistics
import sys
from collections import Counter
from pathlib import Path

from sft_sweep import config, console, sizing
from sft_sweep.data.formats import suggest_field_map
from sft_sweep.data.prepare import TooFewRows, prepare, run_pipeline
from sft_sweep.data.sources import read_source
from sft_sweep.errors import one_line_errors

USAGE = __doc__


def load_config(args: list[str]) -> tuple[dict, dict]:
    """Hydra overrides (a bare path means data=local data.path=<path>) -> plain config; extra key=value."""
    overrides, extra = [], {}
    for arg in args:
        if "=" not in arg:
            overrides += ["data=local", f"data.path={Path(arg).resolve()}"]
        elif arg.split("=", 1)[0] in ("n",):
            extra[arg.split("=", 1)[0]] = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return config.plain(config.compose(overrides)), extra


def percentiles(values: list[int]) -> str:
    if not values:
        return "-"
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return f"p50 {q[49]:.0f}  p90 {q[89]:.0f}  p99 {q[98]:.0f}  max {max(values)}"


def check(cfg: dict) -> None:
    from sft_sweep.data.formats import RowError
    from sft_sweep.data.prepare import Problems
    from sft_sweep.data.tokenize import RowEncoder, masking_config
    from sft_sweep.model import build_tokenizer

    data = {**cfg["data"], "on_error": "skip"}  # report every problem instead of stopping at the first
    try:
        train, validation, report = run_pipeline(data)
    except TooFewRows as exc:  # the problems come first; then what to do about them
        print_problems(exc.report)
        suggest_mapping(exc.specs, exc.report)
        raise
    rows = train + validation
    tokenizer = build_tokenizer(cfg["model"])
    encode, max_length = RowEncoder(tokenizer, masking_config(cfg["data"])), cfg["trainer"]["max_length"]
    template_problems = Problems("skip")  # rows the chat template cannot render as written
    roles, turns, lengths, fate = Counter(), [], [], {}
    for split_name, split_rows in (("train", train), ("validation", validation)):
        fate[split_name] = Counter()
        for row in split_rows:
            if row["messages"] is not None:
                roles.update(m["role"] for m in row["messages"])
                turns.append(len(row["messages"]))
            # exactly as training tokenizes it (data/tokenize.py): cut at max_length, dropped without a trained token
            try:
                encoded = encode(row)
            except RowError as exc:
                template_problems.add(f"{split_name} row {row['id']}", str(exc))
                fate[split_name]["refused"] += 1
                continue
            for enc in encoded:  # a sequence per user turn where the template asks for it (RowEncoder)
                lengths.append(len(enc.input_ids))
                fate[split_name]["whole" if len(enc.input_ids) <= max_length else
                                 "cut" if any(enc.assistant_masks[:max_length]) else "dropped"] += 1
    print(f"rows: {len(rows)} valid ({report['train_rows']} train, {report['validation_rows']} validation), "
          f"{report['rows_rejected']} rejected")
    for name, s in report["sources"].items():
        print(f"  source {name}: {s['rows_valid']} valid, {s['duplicates_within']} duplicates within, "
              f"{s['duplicates_across_sources']} duplicates of earlier sources, {s['rows_kept']} kept")
    print(validation_line(cfg["data"], report))
    print(f"turns per conversation: mean {statistics.mean(turns) if turns else 0:.2f}, max {max(turns, default=0)}; "
          f"roles: {dict(roles)}")
    print(f"length in tokens ({cfg['model']['tokenizer'] or cfg['model']['name_or_path']}): "
          f"{percentiles(lengths)}")
    for split_name, counts in fate.items():
        n = sum(counts.values())
        print(f"{split_name} at trainer.max_length={max_length}: {counts['whole']} of {n} rows whole, {counts['cut']} "
              f"cut (their tokens after it do not train), {counts['dropped']} dropped (no answer token within it)"
              + (f", {counts['refused']} the chat template cannot render (below)" if counts["refused"] else ""))
    if any(counts["cut"] or counts["dropped"] for counts in fate.values()):
        longest = max(lengths)
        print(f"warning: training will cut {fate['train']['cut']} and drop {fate['train']['dropped']} of "
              f"{len(train)} train rows (evaluation: cut {fate['validation']['cut']}, drop "
              f"{fate['validation']['dropped']} of {len(validation)}); raise trainer.max_length (e.g. "
              f"trainer.max_length={2 ** longest.bit_length()}, the longest row is {longest}) to keep them whole")
    print(sizing.describe(report["train_rows"], bool(cfg["lora"]), cfg["optim"]["learning_rate"]))
    if encode.split_rows:
        print(f"multi-turn: {encode.split_rows} conversations train as one sequence per user turn (the chat template "
              f"renders earlier turns differently once a later user turn follows); the counts above are sequences")
    if encode.reasoning_dropped:
        print(f"reasoning: the chat template has no place for reasoning_content: {encode.reasoning_dropped} rows "
              f"train their answers without their reasoning")
    print_problems(report)
    if template_problems.counts:
        print(f"the chat template cannot render {sum(template_problems.counts.values())} rows as written "
              f"(data.on_error=skip drops them, raise stops the run):")
        print_kinds(template_problems.as_dict())


def validation_line(data_cfg: dict, report: dict) -> str:
    """How many rows went to validation, and which setting decided it (mixing.split's rule)."""
    n_val, total = report["validation_rows"], report["train_rows"] + report["validation_rows"]
    if data_cfg.get("eval_path"):
        return f"validation: {n_val} rows from data.eval_path={data_cfg['eval_path']} (none of them trains)"
    if not n_val:
        return "validation: none (data.val_ratio=0 data.min_val_size=0): every row trains, nothing is evaluated"
    by_ratio = math.ceil(data_cfg["val_ratio"] * total)
    rule = (f"never more than half of the {total} rows" if n_val == total // 2 and n_val < max(by_ratio,
            data_cfg["min_val_size"]) else f"data.min_val_size={data_cfg['min_val_size']}"
            if data_cfg["min_val_size"] > by_ratio else f"data.val_ratio={data_cfg['val_ratio']}")
    return (f"validation: {n_val} of {total} rows held out ({rule}; data.val_ratio={data_cfg['val_ratio']} alone "
            f"would hold out {by_ratio}); lower data.min_val_size / data.val_ratio to train on more of them")


def print_problems(report: dict) -> None:
    if not report["problems"]:
        print("problems: none")
        return
    print(f"problems ({report['rows_rejected']} rows rejected):")
    print_kinds(report["problems"])


def print_kinds(problems: dict) -> None:
    for kind, p in problems.items():
        print(f"  {p['count']} x {kind}")
        for example in p["first"]:
            print(f"      {example}")


def suggest_mapping(specs: list[dict], report: dict) -> None:
    """For a source whose rows are all an unknown format: the field_map its columns suggest."""
    for i, spec in enumerate(specs):
        if report["sources"][spec["name"]]["rows_valid"]:
            continue
        rows = read_source(spec["path"], spec["split"])
        columns = list(rows[0][0]) if rows and isinstance(rows[0][0], dict) else []
        mapping = suggest_field_map(columns)
        if mapping is None:
            continue
        value = "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"
        if len(specs) == 1:  # data=local, or a bare path
            args = f"data.format=mapping 'data.field_map={value}'"
        else:
            args = f"data.sources.{i}.format=mapping '+data.sources.{i}.field_map={value}'"
        print(f"suggestion: the columns {columns} look like a question and an answer; map them to chat turns:\n"
              f"  python -m sft_sweep.data check {spec['path']} {args}")


def inspect(cfg: dict, n: int) -> None:
    from sft_sweep.data.formats import RowError
    from sft_sweep.data.tokenize import RowEncoder, masking_config
    from sft_sweep.model import build_tokenizer

    tokenizer = build_tokenizer(cfg["model"])
    train, _, _, _ = prepare(cfg["data"])
    encode = RowEncoder(tokenizer, masking_config(cfg["data"]))
    color = sys.stdout.isatty()
    for row in train[:n]:
        try:
            encoded = encode(row)
        except RowError as exc:
            print(f"--- {row['id']}: not trained ({exc})")
            continue
        for enc in encoded:
            print_marked(tokenizer, row["id"], enc, color)


def print_marked(tokenizer, row_id: str, enc, color: bool) -> None:
    """One sequence, its trained tokens marked."""
    # Decode runs of equally-masked tokens together (one token may be half a UTF-8 character).
    out, start = [], 0
    marks = ("\033[42m", "\033[0m") if color else ("[[", "]]")
    for end in range(1, len(enc.input_ids) + 1):
        if end == len(enc.input_ids) or enc.assistant_masks[end] != enc.assistant_masks[start]:
            text = tokenizer.decode(enc.input_ids[start:end])
            out.append(f"{marks[0]}{text}{marks[1]}" if enc.assistant_masks[start] else text)
            start = end
    print(f"--- {row_id} ({sum(enc.assistant_masks)} of {len(enc.input_ids)} tokens trained)")
    print("".join(out))


@one_line_errors
def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE.strip())
        return 0
    console.cli_logging()
    if not argv or argv[0] not in ("check", "prepare", "inspect"):
        print(USAGE.strip(), file=sys.stderr)
        return 2
    cfg, extra = load_config(argv[1:])
    if argv[0] == "check":
        check(cfg)
    elif argv[0] == "prepare":
        train, validation, report, folder = prepare(cfg["data"])
        print(f"prepared {len(train)} train / {len(validation)} validation rows "
              f"({report['rows_rejected']} rejected) in {folder}")
    else:
        inspect(cfg, int(extra.get("n", 3)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
