"""The search space both sweepers read: `params` from the config plus sweeps on the command line, in Hydra's
sweep grammar -- choice(...), range(...), interval(a, b), tag(log, interval(a, b)). Plain overrides stay
fixed for every trial."""

from dataclasses import dataclass
from typing import Dict, List, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep


@dataclass
class Dimension:
    choices: Optional[list] = None  # choice(...) and range(...)
    low: Optional[float] = None  # interval(low, high)
    high: Optional[float] = None
    log: bool = False
    integer: bool = False


def parse(params: Optional[Dict[str, str]], arguments: List[str]) -> tuple[Dict[str, Dimension], List[str]]:
    """(dimensions by config key, fixed overrides). A command-line argument for a key of `params` replaces
    it: a sweep there changes the dimension, a plain value fixes the key."""
    parser = OverridesParser.create()
    by_key = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in (params or {}).items()])}
    by_key.update({o.get_key_element(): o for o in parser.parse_overrides(list(arguments))})
    space, fixed = {}, []
    for override in by_key.values():
        key, value = override.get_key_element(), override.value()
        if isinstance(value, ChoiceSweep):
            space[key] = Dimension(choices=list(value.list))
        elif isinstance(value, RangeSweep):
            space[key] = Dimension(choices=list(override.sweep_iterator()))
        elif isinstance(value, IntervalSweep):
            integer = isinstance(value.start, int) and isinstance(value.end, int)
            space[key] = Dimension(low=value.start, high=value.end, log="log" in value.tags, integer=integer)
        elif not override.input_line.startswith("hydra/"):  # group choices of the sweep itself (in its
            fixed.append(override.input_line)                 # hydra overrides, which every trial gets too)
    return space, fixed


def as_overrides(values: dict) -> List[str]:
    return [f"{key}={value}" for key, value in values.items()]


def as_run_overrides(fixed: List[str], values: dict) -> List[str]:
    """A trial's overrides as a single run takes them (`hparams_search=...` would start a sweep)."""
    return [o for o in fixed if not o.startswith("hparams_search=")] + as_overrides(values)
