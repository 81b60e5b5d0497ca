"""The sweep file: a base config, the space to search, how to search it, and what to fix.

    load_sweep(path) -> Sweep    read and validate; one ConfigError listing every problem at its line
    examples() -> {name: path}   the sweep files that ship with bpcli: `bpcli sweep quickstart-lr` runs one

    base: configs/spirals.yaml            # every trial starts from it (a file, else a shipped config)
    metric: val_accuracy                  # optimized in its own direction; default: the base's training.monitor
    trials: 20                            # how many; for a grid, at most (and by default) the grid's size
    sampler: tpe                          # grid | random | tpe
    seed: 0                               # the sampler's, and each trial's training seed is drawn from it
    pruner: {name: median, min_epochs: 3} # or hyperband, or none (the default)
    space:                                # the same dotted keys as --set
      optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
      model.layers.0.units: {choice: [16, 32, 64]}
    set: {training.epochs: 30}            # fixed overrides for every trial
    name: spirals-lr                      # the sweep directory is <output_dir>/<name>-<stamp>; default: the file's stem
    output_dir: sweeps
    share_every: 30                       # seconds between copies of a running trial's checkpoint to the scheduler

Validated like a config, in two stages: the sweep file alone (its keys, the
samplers and pruners by name, each dimension as space.py states it), then the
sweep against its base config: every `set` and `space` key must be a key of
the config schema (in some variant: `optimizer.momentum` is one, for sgd), each
fixed value and each end of a range or choice must be a value the config
accepts there, and the metric one it can monitor. Problems are reported at
their line and column in the sweep file, with did-you-mean on keys; problems
inside the base file at theirs. Whether a combination of values fits (sgd's
momentum when the choice picks adam) is only known per trial: every trial's
config is validated again before it is queued (trials.py).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args, get_origin

from pydantic import AfterValidator, BaseModel, Field, ValidationError

from bpcli.config.loading import config_path, load_config, parse_config_text
from bpcli.config.messages import located, problem, show
from bpcli.config.schema import Strict, tagged, unwrap, variants_of
from bpcli.config.shipped import SWEEPS_DIR
from bpcli.config.sections import MONITORS, Config
from bpcli.config.yamlio import Document, dump_yaml, format_path, parse_yaml, read_yaml_file
from bpcli.errors import ConfigError, did_you_mean
from bpcli.nn.metrics import resolve_mode
from bpcli.sweep.engine import PRUNER_OPTIONS, SAMPLERS, NoPruner
from bpcli.sweep.space import PARAMS, grid_size

EXAMPLES = SWEEPS_DIR   # configs/sweeps/: shipped with the training configs, apart from them
RESERVED = {"training.monitor": "the sweep's `metric` sets it", "training.mode": "the metric's own direction sets it"}


# -- the file's schema ---------------------------------------------------------------------------

def _check_folder_name(value: str | None) -> str | None:
    if value is not None and (value in ("", ".", "..") or "/" in value or "\\" in value):
        raise ValueError(f"must be a folder name without / or \\ (got {value!r})")
    return value


class SweepFile(Strict):
    """A bpcli sweep file."""

    base: str = Field(..., description="The config every trial starts from (required).")
    metric: Optional[Literal[MONITORS]] = Field(None, description="What the sweep optimizes; null: the base's "
                                                                  "training.monitor.")
    trials: Optional[int] = Field(None, ge=1, description="How many trials; null: the grid's size (grid only).")
    sampler: Literal[tuple(SAMPLERS)] = Field("tpe", description="grid: every combination; random; tpe: Bayesian.")
    seed: int = Field(0, ge=0, description="Seeds the sampler and each trial's training.seed.")
    pruner: tagged(PRUNER_OPTIONS, "name", named=True) = Field(default_factory=NoPruner,
                                                               description="Stops bad trials early.")
    space: dict[str, Any] = Field(..., min_length=1, description="Dotted config key -> {kind: values}.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted config key -> value, for every trial.")
    name: Annotated[Optional[str], AfterValidator(_check_folder_name)] = Field(
        None, description="The sweep directory's name before its stamp; null: the file's stem.")
    output_dir: str = Field("sweeps", description="Parent folder of sweep directories.")
    share_every: float = Field(30.0, ge=0, description="Seconds between copies of a running trial's latest "
                                                       "checkpoint to the Dask scheduler: a trial whose worker "
                                                       "dies continues from its copy on another worker.")


# -- the validated sweep -------------------------------------------------------------------------

@dataclass
class Sweep:
    """A sweep file, validated against its base config; what the driver and --dry-run work from."""

    file: str
    name: str
    base: Path                          # as written, resolved against the current folder
    base_text: str                      # read once: trials are built from this text, even if the file changes
    metric: str
    direction: str                      # "minimize" or "maximize"
    trials: int
    sampler: str
    seed: int
    pruner: dict                        # {"name": ..., options}
    space: dict[str, tuple[str, Any]]   # key -> (kind, values), in file order
    fixed: dict[str, Any] = field(default_factory=dict)   # `set`
    output_dir: str = "sweeps"
    share_every: float = 30.0
    base_config: Config | None = None   # the base with `set` and the metric applied

    def resolved(self) -> dict:
        """The sweep as sweep.yaml records it (a sweep file itself): every default filled in, the base's
        path absolute."""
        return {"base": str(self.base.resolve()), "metric": self.metric, "trials": self.trials, "sampler": self.sampler, "seed": self.seed, "pruner": dict(self.pruner),
                "space": {key: {kind: values} for key, (kind, values) in self.space.items()},
                "set": dict(self.fixed), "name": self.name, "output_dir": self.output_dir,
                "share_every": self.share_every}

    def set_trials(self, trials: int) -> None:
        """Another number of trials (--trials); a grid's cannot exceed its size."""
        size = grid_size(self.space) if self.sampler == "grid" else None
        if size is not None and trials > size:
            raise ConfigError(f"--trials {trials}: the grid has {size} points, so at most {size} trials")
        self.trials = trials

    def grid(self) -> dict[str, list] | None:
        """{key: every value} for the grid sampler; None if a dimension is continuous."""
        points = {key: PARAMS[kind].grid(values) for key, (kind, values) in self.space.items()}
        return None if any(v is None for v in points.values()) else points


def examples() -> dict[str, Path]:
    """The sweep files that ship with bpcli (configs/sweeps/), by name: quickstart-lr, ..."""
    return {path.stem: path for path in sorted(EXAMPLES.glob("*.yaml"))}


def sweep_path(path: str | Path) -> Path:
    """The sweep file itself if it exists, else the shipped example of that name ("quickstart-lr")."""
    path = Path(path)
    if path.exists():
        return path
    example = examples().get(path.name.removesuffix(".yaml").removesuffix(".yml"))
    if example is None:
        raise ConfigError(f"{path}: no such sweep file, and no shipped sweep of that name (they are: "
                          f"{', '.join(examples())})")
    return example


def load_sweep(path: str | Path, base: str | Path | None = None) -> Sweep:
    """Read a sweep file (or a shipped one by name) and validate it, and its base config with it; every
    problem at its line.

    `base` replaces the file's base config (a resumed sweep: the copy in its sweep directory).
    """
    path = sweep_path(path)
    name = str(path)
    doc = read_yaml_file(path)
    spec = _validated_file(doc, name)
    base = Path(base) if base is not None else _base_path(spec.base, Path(name))
    if base is None:
        tried = " or ".join(dict.fromkeys([str(Path(spec.base)), str(Path(name).parent / spec.base)]))
        raise _sweep_error(name, [(("base",), f"no config file at {tried}, and no shipped config of that name (a "
                                              "relative path is taken from the current folder, else from the "
                                              "sweep file's)")], doc.positions)
    base_config = load_config(base)   # the base's own problems, at its own lines
    base_text = base.read_text(encoding="utf-8-sig")
    metric = spec.metric or base_config.training.monitor
    space = {key: next(iter(entry.items())) for key, entry in spec.space.items()}
    sweep = Sweep(file=name, name=spec.name or Path(name).stem, base=base, base_text=base_text, metric=metric,
                  direction="maximize" if resolve_mode(metric) == "max" else "minimize",
                  trials=spec.trials or grid_size(space), sampler=spec.sampler, seed=spec.seed,
                  pruner=spec.pruner.model_dump(), space=space, fixed=dict(spec.set), output_dir=spec.output_dir,
                  share_every=spec.share_every)
    problems = _against_base(sweep, parse_yaml(base_text, str(base)).data)
    if problems:
        raise _sweep_error(name, problems, doc.positions)
    sweep.base_config = parse_config_text(base_text, str(base), fixed_overrides(sweep))
    return sweep


def _base_path(written: str, sweep_file: Path) -> Path | None:
    """The base config's path: as written (from the current folder), else from the sweep file's folder,
    else the shipped config of that name (configs/quickstart.yaml works from any folder)."""
    for path in (Path(written), sweep_file.parent / written):
        if path.is_file():
            return path
    try:
        return config_path(written)
    except ConfigError:
        return None


def _sweep_error(name: str, problems: list[tuple[tuple, str]], positions: dict) -> ConfigError:
    lines = located(problems, name, positions, [])
    count = f"{len(lines)} problem{'s' if len(lines) != 1 else ''}"
    error = ConfigError(f"{count} in the sweep file:\n" + "\n".join(f"  {line}" for line in lines), file=name)
    error.detail = "; ".join(message for _, message in problems)
    return error


# -- stage 1: the file alone ---------------------------------------------------------------------

def _validated_file(doc: Document, name: str) -> SweepFile:
    if doc.data is None:
        raise ConfigError("the sweep file is empty; it needs at least base: and space:", file=name)
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{name}:{doc.positions[()]}: the top level must be a mapping (base, metric, trials, "
                          f"sampler, seed, pruner, space, set), not {show(doc.data)}")
    space = doc.data.get("space")
    problems = [p for key, entry in space.items() for p in _dimension_problems(key, entry)] \
        if isinstance(space, dict) else []
    try:
        spec = SweepFile.model_validate(doc.data)
    except ValidationError as error:
        problems += [problem(e, doc.data, SweepFile) for e in error.errors(include_url=False)]
        raise _sweep_error(name, problems, doc.positions) from None
    problems += _plan_problems(spec) if not problems else []
    if problems:
        raise _sweep_error(name, problems, doc.positions)
    return spec


def _dimension_problems(key: str, entry) -> list[tuple[tuple, str]]:
    """A space entry is {kind: values}, with one kind of PARAMS, written as that kind wants."""
    where = ("space", key)
    kinds = ", ".join(PARAMS)
    if not isinstance(entry, dict) or len(entry) != 1:
        written = f"{{{', '.join(entry)}}}" if isinstance(entry, dict) else show(entry)
        return [(where, f"must be a mapping with one of {kinds}, e.g. {{loguniform: [1.0e-4, 1.0e-1]}} or "
                        f"{{choice: [16, 32]}} (got {written}); to fix a value, put it under `set:`")]
    kind, values = next(iter(entry.items()))
    if kind not in PARAMS:
        return [(where + (kind,), f"unknown kind of dimension; allowed: {kinds}.{did_you_mean(kind, PARAMS)}")]
    return [(where + (kind,), message) for message in PARAMS[kind].problems(values)]


def _plan_problems(spec: SweepFile) -> list[tuple[tuple, str]]:
    """What ties the file's keys together: the grid and the trials, reserved and doubled keys."""
    problems = []
    space = {key: next(iter(entry.items())) for key, entry in spec.space.items()}
    size = grid_size(space)
    if spec.sampler == "grid":
        for key, (kind, values) in space.items():
            if PARAMS[kind].grid(values) is None:
                problems.append((("space", key, kind), f"a grid needs a finite set of values, not a continuous "
                                                       f"{kind} range: use {{choice: [...]}} or {{int: [low, high]}}, "
                                                       "or sampler: random or tpe"))
        if size is not None and spec.trials is not None and spec.trials > size:
            problems.append((("trials",), f"the grid has {size} points, so at most {size} trials (got "
                                          f"{spec.trials}); leave trials out to run the whole grid"))
    elif spec.trials is None:
        problems.append((("trials",), f"required key is missing: how many trials the {spec.sampler} sampler runs"))
    for section in ("space", "set"):
        for key in getattr(spec, section):
            if key in RESERVED:
                problems.append(((section, key), f"cannot be {'searched' if section == 'space' else 'set'}: "
                                                 f"{RESERVED[key]}"))
    for key in spec.set:
        if key in spec.space:
            problems.append((("set", key), "is also in space: a key is either searched or fixed"))
    return problems


# -- stage 2: the sweep against its base config ---------------------------------------------------

def fixed_overrides(sweep: Sweep) -> list[str]:
    """The --set texts every trial starts with: the sweep's `set`, then its metric as training.monitor."""
    return [*(override(key, value) for key, value in sweep.fixed.items()),
            override("training.monitor", sweep.metric), override("training.mode", "auto")]


def override(key: str, value) -> str:
    """KEY=VALUE as --set takes it, the value written in YAML (one line, read back the same)."""
    return f"{key}={dump_yaml(value, flow=True).strip().removesuffix('...').strip()}"


def _against_base(sweep: Sweep, base_data: dict) -> list[tuple[tuple, str]]:
    problems = [((section, key), message) for section, keys in (("set", sweep.fixed), ("space", sweep.space))
                for key in keys for message in [schema_problem(key, _with_fixed(base_data, sweep))] if message]
    if problems:
        return problems
    fixed = fixed_overrides(sweep)
    where = {text: (("set", key),) for text, key in zip(fixed, sweep.fixed)}
    where[fixed[-2]] = (("metric",),)
    problems = override_problems(sweep, fixed, where)
    for key, (kind, values) in sweep.space.items():
        fixed_variant = not variant_searched(key, sweep.space)
        found = [((kind, i), message) for i, value in enumerate(PARAMS[kind].candidates(values))   # the ends, or
                 for message in candidate_problems(sweep, fixed, override(key, value), fixed_variant)]  # each choice
        unknown = [message for _, message in found if message.startswith("unknown key")]
        problems += [(("space", key), unknown[0])] if unknown else \
            [(("space", key, *where), _hint(message, kind)) for where, message in found]
    return problems


def _hint(message: str, kind: str) -> str:
    if kind in ("uniform", "loguniform") and message.startswith("must be an integer"):
        return f"{message}: {kind} draws numbers with a fraction; for integers use {{int: [low, high]}}"
    return message


def _with_fixed(base_data: dict, sweep: Sweep) -> dict:
    """The base's data with the sweep's fixed values, so that list lengths and sections are the trials'."""
    data = copy.deepcopy(base_data)
    for key, value in sweep.fixed.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = _child(node, part)
        if isinstance(node, dict):
            node[last] = value
    return data


def _child(node, part: str):
    """node[part] of a mapping, or of a list if part is an index in it; None otherwise."""
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


def override_problems(sweep: Sweep, overrides: list[str], where: dict) -> list[tuple[tuple, str]]:
    """Validate the base with `overrides`; each problem an override caused, at its sweep-file key.

    loading.py reports a problem an override caused as '--set KEY=VALUE[ sub.key]: message';
    `where` maps each override's text to the sweep file's key path it came from. A problem
    in the base file itself is kept whole, naming the base file's own line.
    """
    try:
        parse_config_text(sweep.base_text, str(sweep.base), overrides)
    except ConfigError as error:
        return [_placed(line, where) for line in problem_lines(error)]
    return []


def candidate_problems(sweep: Sweep, fixed: list[str], text: str, fixed_variant: bool = True) -> list[str]:
    """What the config says of one candidate value at its own key (a wrong type, out of range, unknown name).

    A problem elsewhere depends on the other dimensions' values: that is a trial's to
    find. So does an unknown key when the space searches the variant around it
    (optimizer.momentum is sgd's, and optimizer.name is searched); with the variant
    fixed (the base's adam), no trial could take it.
    """
    try:
        parse_config_text(sweep.base_text, str(sweep.base), [*fixed, text])
    except ConfigError as error:
        own = [line.removeprefix(f"--set {text}: ") for line in problem_lines(error)
               if line.startswith(f"--set {text}: ")]
        return [f"{message} No trial can take it: the base's variant here is fixed (search its name or type too)"
                if message.startswith("unknown key") else message
                for message in own if fixed_variant or not message.startswith("unknown key")]
    return []


def variant_searched(key: str, space) -> bool:
    """Whether the space searches what encloses `key`: a section or item above it, or its name or type."""
    parts = key.split(".")
    for i in range(1, len(parts)):
        above = ".".join(parts[:i])
        if above in space or f"{above}.name" in space or f"{above}.type" in space:
            return True
    return False


def problem_lines(error: ConfigError) -> list[str]:
    """The problem lines of a config error: one line each after the header, or the message alone."""
    lines = str(error).split("\n")
    return [line.strip() for line in lines[1:]] if len(lines) > 1 else [str(error)]


def _placed(line: str, where: dict) -> tuple[tuple, str]:
    for text, (path,) in where.items():
        head = f"--set {text}"
        if line.startswith(head + ":") or line.startswith(head + " "):
            return path, line[len(head):].removeprefix(":").strip()
    return (), line


def schema_problem(key: str, data: dict) -> str | None:
    """Why a dotted key is not a key of the config schema in any variant (None if it is).

    `data` is the base config's (with the fixed values): a list index must be below the list's length.
    """
    parts = key.split(".")
    types, node, done = [Config], data, []
    for part in parts:
        if any(get_origin(unwrap(t)) is dict for t in types):
            return None   # a free-form mapping (data.options): any key
        if all(get_origin(unwrap(t)) is list for t in types):
            size = len(node) if isinstance(node, list) else 0
            if not part.isdigit() or int(part) >= size:
                return (f"not a key of the config: {format_path(done)} is a list of {size} items, so "
                        f"{part!r} is not an index from 0 to {size - 1}")
            types, node = [get_args(unwrap(types[0]))[0]], node[int(part)]
        else:
            fields, prefix = _fields(types), format_path(done)
            if not fields:
                return f"not a key of the config: {prefix} is a single value, not a mapping"
            if part not in fields:
                allowed = sorted(fields)
                where = f"{prefix} takes" if prefix else "its sections are"
                close = difflib.get_close_matches(part, allowed, n=1)
                mean = f" Did you mean {'.'.join([*parts[:len(done)], close[0], *parts[len(done) + 1:]])!r}?" \
                    if close else ""
                return f"not a key of the config; {where}: {', '.join(allowed)}.{mean}"
            types, node = fields[part], _child(node, part)
        done.append(part)
    return None


def _fields(types: list) -> dict[str, list]:
    """{key: [declared types]} of every mapping among `types`, each tagged union's variants together."""
    fields: dict[str, list] = {}
    for tp in types:
        models = list(variants_of(tp).values()) or [unwrap(tp)]
        for model in models:
            if isinstance(model, type) and issubclass(model, BaseModel):
                for name, info in model.model_fields.items():
                    fields.setdefault(name, []).append(info.annotation)
    return fields
