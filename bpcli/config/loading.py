"""Reading a config file into a validated Config: every problem at once, each at its line.

    load_config(path, overrides=()) -> Config
    parse_config_text(text, name, overrides=()) -> Config

A config is data only (yamlio.py reads the YAML: YAML 1.2 scalars, duplicate
keys refused, size caps). It is validated in full before anything runs, and
every problem is reported at once in one ConfigError, one line each, sorted by
line, each naming the file position and key path (messages.py words them):

    run.yaml: 2 problems in the config:
      run.yaml:7:3 optimizer.momentum: unknown key; allowed: beta1, beta2, eps, lr, name, weight_decay.
      run.yaml:12:15 data.batch_size: must be an integer >= 1 (got -4)

`--set key.path=value` overrides are applied to the parsed mapping before
validation, and problems in them are reported as `--set key.path=value: ...`.
Validation happens here, once: the pydantic schema (ranges, names, required
keys), then the rules that tie values together (`_cross_field_problems`);
everything built from a Config afterwards trusts it.
"""

from pathlib import Path
from typing import Sequence

from pydantic import ValidationError

from bpcli.config.messages import located, problem, show
from bpcli.config.sections import SECTIONS, Config, resolve_data_paths, test_split_problems
from bpcli.config.shipped import find_shipped, shipped_configs
from bpcli.config.yamlio import Document, format_path, parse_yaml, problems_error, read_yaml_file
from bpcli.errors import ConfigError
from bpcli.nn.losses import LOSSES
from bpcli.nn.metrics import metric_for
from bpcli.optim.optimizers import OPTIMIZERS
from bpcli.optim.schedules import SCHEDULES


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a config file; raise one ConfigError listing every problem.

    A path that names no file but a shipped config ("quickstart", "configs/xor.yaml") reads that one,
    so the shipped configs work from any folder, also with bpcli installed from a wheel.
    """
    path = config_path(path)
    return _validated(read_yaml_file(path), str(path), overrides, path.parent)


def config_path(path: str | Path) -> Path:
    """The file itself if it exists, else the shipped config of that name; else a ConfigError saying so."""
    path = Path(path)
    if path.exists():
        return path
    shipped = find_shipped(path)
    if shipped is None:
        raise ConfigError(f"{path}: no such config file, and no shipped config of that name (bpcli config list "
                          f"shows them: {', '.join(shipped_configs())})")
    return shipped


def parse_config_text(text: str, name: str = "<config>", overrides: Sequence[str] = ()) -> Config:
    """Validate config text; `name` stands for the file in messages."""
    return _validated(parse_yaml(text, name), name, overrides)


def _validated(doc: Document, name: str, overrides: Sequence[str], folder: Path | None = None) -> Config:
    """The validated Config; with `folder` (the file's), its relative data paths resolved from there
    (those set by --set from the working folder)."""
    if doc.data is None:
        raise ConfigError("the config is empty; it needs at least model.layers", file=name)
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{name}:{doc.positions[()]}: the top level must be a mapping of sections "
                          f"({', '.join(SECTIONS)}), not {show(doc.data)}")
    applied = [_apply_override(doc.data, text) for text in overrides]
    try:
        config = Config.model_validate(doc.data)
        problems = _cross_field_problems(config)
    except ValidationError as error:
        problems = [problem(e, doc.data, Config) for e in error.errors(include_url=False)]
    if problems:
        raise problems_error(name, located(problems, name, doc.positions, applied))
    if folder is None:
        return config
    overridden = tuple(path[1] for path, _ in applied if path[:1] == ("data",) and len(path) == 2)
    return resolve_data_paths(resolve_data_paths(config, folder, keep=overridden), Path.cwd())


def _apply_override(data: dict, text: str) -> tuple[tuple, str]:
    """Set KEY.PATH=VALUE in `data`, creating missing or null mappings on the way; return (path, text)."""
    key, sep, value_text = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {text}: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.001")
    try:
        value = parse_yaml(value_text, "value").data
    except ConfigError as error:
        raise ConfigError(f"--set {text}: the value is not valid: {error.detail}") from None
    node, path = data, []
    for i, part in enumerate(parts):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {text}: {format_path(path)} is a list of {len(node)} items; "
                                  f"{part!r} is not an index from 0 to {len(node) - 1}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {text}: {format_path(path)} is {show(node)}, not a mapping or a list")
        path.append(part)
        if i == len(parts) - 1:
            node[part] = value
        elif isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        node = node[part]
    return tuple(path), text


def _cross_field_problems(config: Config) -> list[tuple[tuple, str]]:
    """Rules that tie a value to another: between sections here, within a component by its own class.

    A component states its rules in `option_problems` (SGD: nesterov needs momentum;
    cosine: min_lr at most lr, warmup at most the epochs), so they are written once,
    beside the code they protect, and checked here, before anything is built.
    """
    problems, monitor = [], config.training.monitor
    if monitor.startswith("val_") and config.data.val_fraction == 0:
        problems.append((("training", "monitor"), f"{monitor!r} needs a validation set: set data.val_fraction "
                                                  f"> 0, or monitor a train_* metric"))
    tasks = metric_for(monitor).tasks
    if LOSSES[config.loss.name].kind not in tasks:
        fitting = sorted(name for name, cls in LOSSES.items() if cls.kind in tasks)
        kind = "classification" if "regression" not in tasks else " or ".join(tasks)
        problems.append((("training", "monitor"), f"{monitor!r} needs a {kind} loss "
                                                  f"({', '.join(fitting)}), not {config.loss.name!r}"))
    problems += [(path, f"must be {must_be} (got {show(value)})")
                 for path, value, must_be in test_split_problems(config)]
    diagnostics = config.diagnostics
    if diagnostics.update_ratio_low >= diagnostics.update_ratio_high:
        problems.append((("diagnostics", "update_ratio_low"), f"must be below diagnostics.update_ratio_high "
                                                             f"({diagnostics.update_ratio_high:g})"))
    optimizer, schedule = config.optimizer, config.schedule
    problems += [(("optimizer", key), message)
                 for key, message in OPTIMIZERS[optimizer.name].option_problems(optimizer.model_dump())]
    context = {"lr": optimizer.lr, "epochs": config.training.epochs}
    problems += [(("schedule", key), message)
                 for key, message in SCHEDULES[schedule.name].option_problems(schedule.model_dump(), context)]
    return problems
