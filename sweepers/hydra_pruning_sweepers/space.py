"""The search space both sweepers read: `params` from the sweeper's config plus sweeps on the command line, in
Hydra's sweep grammar. A command-line argument for a key of `params` replaces it (a sweep changes the dimension,
a plain value fixes the key); plain overrides and `~key` deletions are passed to every trial as they are.

    choice(a, b, ...), shuffle(...)    categorical: no order between the values
    range(start, stop[, step])         ordered integers -- floats when a bound or the step is a float -- from start
                                       in steps of step; stop is excluded, as in Hydra's own range
    interval(a, b)                     floats in [a, b];  int(interval(a, b)): integers in [a, b]
    tag(log, ...)                      sampled on a log scale

Optuna gets Categorical / Int / Float distributions (with the step, and log), Ray Tune the same dimensions
(asha_sweeper.py); a grid enumerates every categorical or stepped dimension.
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer


@dataclass(frozen=True)
class Dimension:
    kind: str  # categorical | int | float
    choices: Optional[tuple] = None  # categorical
    low: Optional[float] = None  # int / float: [low, high], high included
    high: Optional[float] = None
    step: Optional[float] = None  # None: continuous (float) / 1 (int)
    log: bool = False

    def values(self) -> Optional[list]:
        """Every value, for a grid (None: a continuous dimension)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step:
            n = round((self.high - self.low) / self.step)
            return [self.low + i * self.step for i in range(n + 1)]
        return None

    def to_optuna(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)


def dimension(override: Override) -> Optional[Dimension]:
    """The dimension a sweep override describes; None for a plain value (or a deletion)."""
    if override.is_delete() or not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return Dimension("categorical", choices=tuple(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: an empty range")
        floats = any(isinstance(v, float) for v in (value.start, value.stop, value.step))
        low, high, step = min(values), max(values), abs(value.step)
        if floats:
            return Dimension("float", low=float(low), high=float(high), step=float(step))
        return Dimension("int", low=int(low), high=int(high), step=int(step))
    if isinstance(value, IntervalSweep):
        integer = isinstance(value.start, int) and isinstance(value.end, int)
        return Dimension("int" if integer else "float", low=value.start, high=value.end, log="log" in value.tags)
    raise ValueError(f"{override.input_line}: this sweep is not supported by the sweeper")


def parse(params: Optional[Dict[str, str]], arguments: List[str]) -> Tuple[Dict[str, Dimension], List[str]]:
    """(dimensions by config key, fixed overrides for every trial)."""
    parser = OverridesParser.create()
    by_key = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in (params or {}).items()])}
    by_key.update({o.get_key_element(): o for o in parser.parse_overrides(list(arguments))})
    space, fixed = {}, []
    for key, override in by_key.items():
        dim = dimension(override)
        if dim is not None:
            space[key] = dim
        elif not override.input_line.startswith("hydra/"):  # group choices of the sweep itself (in its
            fixed.append(override.input_line)                 # hydra overrides, which every trial gets too)
    return space, fixed


def grid_size(space: Dict[str, Dimension]) -> Optional[int]:
    """How many points a grid over `space` has (None when a dimension is continuous)."""
    sizes = [dim.values() for dim in space.values()]
    return None if any(v is None for v in sizes) else math.prod(len(v) for v in sizes)


def as_overrides(values: dict) -> List[str]:
    return [f"{key}={value}" for key, value in values.items()]


def as_run_overrides(fixed: List[str], values: dict) -> List[str]:
    """A trial's overrides as a single run takes them (`hparams_search=...` would start a sweep)."""
    return [o for o in fixed if not o.startswith("hparams_search=")] + as_overrides(values)


# --- hydra-optuna-sweeper's names for the same, for code written against that plugin ---------------------------
def create_optuna_distribution_from_override(override: Override) -> Any:
    """An Optuna distribution for a sweep override, the value as a string for a plain one."""
    dim = dimension(override)
    return override.get_value_element_as_str() if dim is None else dim.to_optuna()


def create_params_from_overrides(arguments: List[str]) -> Tuple[Dict[str, Any], Dict[str, Any], List[str]]:
    """(distributions by key, fixed values by key, deletions), as hydra-optuna-sweeper splits its overrides."""
    distributions, fixed, deletions = {}, {}, []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_delete():
            deletions.append(override.input_line)
        elif (dim := dimension(override)) is not None:
            distributions[override.get_key_element()] = dim.to_optuna()
        else:
            fixed[override.get_key_element()] = override.get_value_element_as_str()
    return distributions, fixed, deletions
