"""A static guard: no code in bpcli/ can turn a file into running code (pickle, unsafe YAML, eval, ...).

bpcli reads checkpoints, configs and datasets that users download or are sent;
the promise "loading never runs code" holds only while nothing in the package
calls a deserializer that can. The source is tokenized, so words in strings,
docstrings and comments (this project explains why it avoids pickle) and
methods such as model.eval() are not mistaken for the real thing.
"""

import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bpcli"

# Modules whose import alone is a finding: their purpose is to unpickle.
PICKLING_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "shelve"}
UNSAFE_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader"}

# (tokens in a row, what is reported), matched on NAME and OP tokens only; a single name must not be an
# attribute (x.shelve). Code inside f-strings is tokenized only from Python 3.12 on.
SEQUENCES = [
    (("pickle", ".", "load"), "pickle.load"),
    (("pickle", ".", "loads"), "pickle.loads"),
    (("pickle", ".", "Unpickler"), "pickle.Unpickler"),
    (("yaml", ".", "load", "("), "yaml.load("),
    (("yaml", ".", "load_all", "("), "yaml.load_all("),
    (("yaml", ".", "unsafe_load"), "yaml.unsafe_load"),
    (("yaml", ".", "unsafe_load_all"), "yaml.unsafe_load_all"),
    (("yaml", ".", "full_load"), "yaml.full_load"),
    (("yaml", ".", "full_load_all"), "yaml.full_load_all"),
    *((("yaml", ".", name), f"yaml.{name}") for name in sorted(UNSAFE_YAML_LOADERS)),
    *((("Loader", "=", name), f"Loader={name}") for name in sorted(UNSAFE_YAML_LOADERS)),
    *((("Loader", "=", "yaml", ".", name), f"Loader=yaml.{name}") for name in sorted(UNSAFE_YAML_LOADERS)),
    *(((name,), name) for name in ("UnsafeLoader", "FullLoader", "CUnsafeLoader", "CFullLoader")),  # imported bare
    (("allow_pickle", "=", "True"), "allow_pickle=True"),
    (("marshal", ".", "load"), "marshal.load"),
    (("marshal", ".", "loads"), "marshal.loads"),
    (("shelve",), "shelve"),
]
# Builtins that run text as code: flagged when called, unless it is a method (x.eval()) or a definition.
CALLS = ("eval", "exec", "__import__")


def code_tokens(source: str) -> list[tokenize.TokenInfo]:
    """The NAME and OP tokens (no strings, comments or layout), plus NEWLINE to end statements."""
    kinds = (tokenize.NAME, tokenize.OP, tokenize.NEWLINE)
    return [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type in kinds]


def findings(source: str) -> list[tuple[int, str]]:
    """(line, pattern) for every dangerous construct in `source`."""
    tokens = code_tokens(source)
    words = [t.string for t in tokens]
    found = []
    for i, token in enumerate(tokens):
        for sequence, label in SEQUENCES:
            if tuple(words[i:i + len(sequence)]) == sequence and (len(sequence) > 1 or _not_attribute(words, i)):
                found.append((token.start[0], label))
        if token.string in CALLS and words[i + 1:i + 2] == ["("] and _not_attribute(words, i) \
                and (i == 0 or words[i - 1] != "def"):
            found.append((token.start[0], f"{token.string}("))
        found += [(token.start[0], f"import {name}") for name in _imported(words, i)]
    return sorted(set(found))


def _not_attribute(words: list[str], i: int) -> bool:
    return i == 0 or words[i - 1] != "."


def _imported(words: list[str], i: int) -> list[str]:
    """Pickling modules named by the import statement starting at token i (import a, b / from a import b).

    `import` and `from` are keywords, so they start an import statement, except `from` in
    `raise ... from` and `yield from`, which has no `import` after it.
    """
    if words[i] not in ("import", "from"):
        return []
    end = next((j for j in range(i, len(words)) if words[j] in ("\n", "", ";")), len(words))
    statement = words[i:end]
    if statement[0] == "from" and "import" not in statement:
        return []
    roots = [statement[1]] if statement[0] == "from" else \
        [w for k, w in enumerate(statement[1:], 1) if statement[k - 1] in ("import", ",")]
    imported = statement[statement.index("import") + 1:] if statement[0] == "from" else []
    return [name for name in roots + imported if name in PICKLING_MODULES]


def package_findings(package: Path = PACKAGE) -> list[str]:
    """'bpcli/file.py:line: pattern' for every finding in every .py file under the package."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        for line, label in findings(path.read_text(encoding="utf-8")):
            problems.append(f"{path.relative_to(package.parent)}:{line}: {label}")
    return problems


def test_no_code_in_the_package_can_turn_a_file_into_running_code():
    assert list(PACKAGE.rglob("*.py")), f"no Python files under {PACKAGE}"
    problems = package_findings()
    assert not problems, "constructs that can run code from data:\n" + "\n".join(problems)


# -- the guard itself can fail -------------------------------------------------------------------

@pytest.mark.parametrize("line, label", [
    ("import pickle", "import pickle"),
    ("import os, pickle as p", "import pickle"),
    ("from pickle import loads", "import pickle"),
    ("from cloudpickle import loads", "import cloudpickle"),
    ("import shelve", "shelve"),
    ("x = pickle.load(f)", "pickle.load"),
    ("x = pickle.loads(b)", "pickle.loads"),
    ("x = yaml.load(text)", "yaml.load("),
    ("x = yaml.load(text, Loader=yaml.Loader)", "Loader=yaml.Loader"),
    ("x = yaml.unsafe_load(text)", "yaml.unsafe_load"),
    ("x = yaml.full_load(text)", "yaml.full_load"),
    ("x = yaml.compose(text, Loader=yaml.UnsafeLoader)", "yaml.UnsafeLoader"),
    ("x = yaml.compose(text, Loader=yaml.FullLoader)", "yaml.FullLoader"),
    ("x = yaml.compose(text, Loader=FullLoader)", "Loader=FullLoader"),
    ("class L(yaml.Loader): pass", "yaml.Loader"),
    ("a = np.load(path, allow_pickle=True)", "allow_pickle=True"),
    ("a = np.load(path, allow_pickle = True)", "allow_pickle=True"),
    ("y = eval(text)", "eval("),
    ("y = eval (text)", "eval("),
    ("if fast: import pickle", "import pickle"),
    ("try: import cPickle as pickle\nexcept ImportError: pass", "import cPickle"),
    ("from . import dill", "import dill"),
    ("exec(code)", "exec("),
    ("m = __import__(name)", "__import__("),
    ("c = marshal.loads(b)", "marshal.loads"),
    ("d = shelve.open(path)", "shelve"),
])
def test_the_guard_catches_each_pattern(line, label):
    found = findings(f"import numpy as np\n{line}\n")
    assert (2, label) in found, found


def test_the_guard_ignores_safe_look_alikes():
    source = '''
"""Never unpickle: pickle.load and yaml.load( and eval( would run code; import pickle is banned."""
import yaml  # not yaml.load(, never pickle.loads

class Yaml12Loader(yaml.SafeLoader):
    pass

def eval(self):  # a method called eval
    return self

def eval_(checkpoint):
    model.eval()
    self.exec(1)
    data = yaml.safe_load(text)
    node = yaml.compose(text, Loader=Yaml12Loader)
    out = yaml.dump(data, Dumper=yaml.SafeDumper)
    a = np.load(path, allow_pickle=False)
    message = "eval(x) and exec(y) and __import__('os') and marshal.loads"
    raise ValueError(message) from None
    evaluate(x, loader=self.Loader)
    return eval_(checkpoint)
'''
    assert findings(source) == []


def test_a_finding_names_file_and_line(tmp_path):
    package = tmp_path / "bpcli"
    (package / "commands").mkdir(parents=True)
    (package / "ok.py").write_text("x = 1\n")
    (package / "commands" / "bad.py").write_text('"""doc"""\n\nimport pickle\n')
    assert package_findings(package) == ["bpcli/commands/bad.py:3: import pickle"]
