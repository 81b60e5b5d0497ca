"""One YAML dialect: whatever bpcli writes (config.yaml, a checkpoint's config, `config show`) reads back unchanged.

bpcli reads configs as YAML 1.2 (yamlio.parse_yaml). A writer that follows YAML 1.1
(PyYAML's safe_dump) leaves `1e3` unquoted, because in 1.1 it is a string, and the 1.2
reader then sees the number 1000.0: a run named "1e3" could not be re-run or resumed.
The property tests generate values that look like numbers, booleans, nulls and dates
to one dialect or the other, and check write -> read with bpcli's own functions.
"""

import ast
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.config.sections import Config, resolved_dict
from bpcli.config.yamlio import dump_yaml, parse_yaml

PACKAGE = Path(__file__).resolve().parent.parent / "bpcli"
WRITERS = ("dump", "safe_dump", "dump_all", "safe_dump_all", "emit", "serialize", "serialize_all")

# Strings that YAML 1.1, YAML 1.2 or both would read as something else if written bare.
LOOKALIKES = ["1e3", "1E3", "1e+3", "1.0e3", "1.5E-7", ".5", "-.5", "+1", "010", "0x10", "0X1F", "0o17", "0b101",
              "1_000", "1:30", "190:20:30", "2026-01-01", "2026-01-01 10:00:00", "2026-01-01T10:00:00Z", "yes",
              "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "true", "True", "TRUE", "tRuE", "false",
              "null", "Null", "NULL", "~", "", " ", ".inf", "-.Inf", "+.INF", ".nan", ".NaN", "inf", "nan", "=",
              "<<", "#x", "a: b", "- x", "[1]", "{a: 1}", "@x", "`x", "!x", "&x", "*x", "%x", "|", ">", "'", '"',
              "x\ny", "x\n", "  lead", "trail  ", "tab\there", "ümlaut", "日本", "\u2028", "\x85", "\x07"]

lookalike = st.sampled_from(LOOKALIKES)
text = st.one_of(lookalike, st.text(max_size=12), st.builds(lambda a, b: a + b, lookalike, lookalike))
floats = st.one_of(st.floats(allow_nan=False), st.sampled_from([5e-324, 1e-300, 2.2250738585072014e-308, 1e300,
                                                                1.7976931348623157e308, 1e16, 1e-5, 0.1, -0.0]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), floats, text)
plain_data = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(text, inner, max_size=4)), max_leaves=12)


def same(a, b) -> bool:
    """Equal, with types (True is not 1, 1 is not 1.0) and the sign of zero."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None)
@given(plain_data)
def test_any_plain_data_reads_back_as_written(data):
    assert same(parse_yaml(dump_yaml({"x": data})).data, {"x": data})


# -- configs -------------------------------------------------------------------------------------

positive = st.one_of(st.floats(min_value=5e-324, max_value=1e300, exclude_min=False),
                     st.sampled_from([5e-324, 1e-300, 1e-9, 1e300, 3.0, 1.0]))
folder_name = text.filter(lambda s: s not in ("", ".", "..") and not any(c in s for c in "/\\\0"))
folder_path = text.filter(lambda s: "\0" not in s)
layer = st.fixed_dictionaries({
    "type": st.just("dense"), "units": st.integers(1, 64),
    "activation": st.sampled_from([None, "relu", "sigmoid", "tanh"]),
    "init": st.one_of(st.just("glorot_uniform"), st.fixed_dictionaries({"name": st.just("normal"), "std": positive}))})


def csv_file(stem: str) -> str:
    return f"{stem} .csv"   # the space keeps a stem such as "." from leaving no name before the suffix


@st.composite
def configs(draw) -> dict:
    """A valid config whose strings and numbers are the awkward ones; resolved as bpcli writes it."""
    data = {"model": {"layers": draw(st.lists(layer, min_size=1, max_size=4))},
            "loss": {"name": "binary_cross_entropy", "l2": draw(st.sampled_from([0.0, 1e-300, 0.5]))},
            "optimizer": {"name": "sgd", "lr": draw(positive), "momentum": draw(st.floats(0, 0.999)),
                          "weight_decay": draw(st.one_of(st.just(0.0), positive))},
            "data": {"dataset": draw(st.one_of(st.sampled_from(["xor", "moons"]), folder_name.map(csv_file))),
                     "data_dir": draw(st.one_of(st.none(), folder_path)),
                     "mirrors": draw(st.one_of(st.none(), st.lists(folder_path, max_size=3)))},
            "training": {"epochs": draw(st.integers(1, 10**6)), "seed": draw(st.integers(0, 2**32 - 1)),
                         "monitor": "train_loss"},
            "output": {"dir": draw(folder_path), "name": draw(st.one_of(st.none(), folder_name))}}
    if data["data"]["dataset"].endswith(".csv"):
        data["data"]["options"] = {"target": draw(text)}
    return resolved_dict(Config.model_validate(data))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])   # 8-15 ms each: PyYAML
@given(configs())
def test_any_valid_config_survives_write_and_read(config):
    """config.yaml (dump_yaml of the resolved config) read back: the same data, so the same validated config."""
    read = parse_yaml(dump_yaml(config), "config.yaml").data
    assert same(read, config)
    assert same(resolved_dict(Config.model_validate(read)), config)


def test_no_module_writes_yaml_another_way():
    """PyYAML's own dumpers write YAML 1.1: every writer goes through yamlio.dump_yaml instead."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "yamlio.py":
            continue
        found += [f"{path.relative_to(PACKAGE)}:{node.lineno}: yaml.{node.attr}"
                  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml"
                  and node.attr in WRITERS]
    assert found == []


def test_a_run_named_like_a_number_can_be_rerun_and_resumed(tmp_path, monkeypatch):
    """The issue's case: --set 'output.name="1e3"', then its config.yaml again, and --resume without a config."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["train", "xor", "--set", 'output.name="1e3"', "--set", "training.epochs=3",
                                "--set", "output.dir=runs", "--quiet"])
    assert first.exit_code == 0, first.output
    config = tmp_path / "runs" / "1e3" / "config.yaml"
    assert "name: '1e3'" in config.read_text()
    again = runner.invoke(app, ["config", "validate", str(config)])
    assert again.exit_code == 0, again.output
    resumed = runner.invoke(app, ["train", "--resume", "runs/1e3", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert "Nothing to train" in resumed.output
