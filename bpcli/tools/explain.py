"""The forward and backward equations of a configured network, layer by layer, with every shape.

    explain(config, input_dim) -> list[Section]        render(sections, width) -> str

What the articles on backpropagation derive for a generic network, written out
for the user's own: each layer's forward equation with the shapes of its
matrices for the configured batch size B, the loss and its gradient, the chain
rule back through every layer, the penalties and the optimizer's update. The
formulas are the components' own: each layer's `equations` and
`backward_equations` (layers.py), the `equation`, `derivative` and `update`
texts of activations, losses, regularizers and optimizers, kept next to the
code they describe; this module only names the variables, adds the loss's
shapes, and iterates, so a new component needs no change here.

Names: a layer's output is its `symbol` (z dense, a activation, h otherwise)
numbered by its layer (layers.3 -> a3), as are its parameters (W3, b3, gamma3,
beta3: `param_symbols`); the input is x, and dname is dL/dname, as everywhere.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from bpcli.config.sections import Config, optimizer_kwargs, resolved_dict
from bpcli.nn.layers import Terms, substitute
from bpcli.nn.losses import build_loss
from bpcli.nn.model import Model, build_model
from bpcli.nn.regularizers import build_regularizers
from bpcli.optim.optimizers import Optimizer, build_optimizer
from bpcli.optim.schedules import SCHEDULES
from bpcli.training.run import as_config


@dataclass
class Line:
    label: str          # layers.N, loss, ... ("" continues the row above)
    math: str
    shapes: str = ""


@dataclass
class Section:
    title: str
    lines: list[Line]
    notes: list[str] = field(default_factory=list)


@dataclass
class Net:
    """The model with a name and a width for every layer's output; index -1 is the input x."""

    model: Model
    batch: int

    def name(self, i: int) -> str:
        return "x" if i < 0 else f"{self.model.layers[i].symbol}{i}"

    def width(self, i: int) -> int:
        return self.model.input_dim if i < 0 else self.model.widths[i]

    def shape(self, i: int) -> str:
        return f"({self.batch}, {self.width(i)})"

    def terms(self, i: int, penalties=()) -> Terms:
        """What layer i's equations call its input, output and sizes, and the penalties on its parameters."""
        layer = self.model.layers[i]
        extra = {name: penalty_terms(self, penalties, f"{layer.param_symbol(name)}{i}") for name in layer.params}
        return Terms(i, self.name(i - 1), self.name(i), self.batch, self.width(i - 1), self.width(i),
                     input_grad=i != self.model.first_with_params, penalties=extra)


def explain(config: Config | dict, input_dim: int) -> list[Section]:
    """The sections `bpcli explain` prints, for a config (or a resolved config dict)."""
    config = as_config(config)
    model = build_model(resolved_dict(config)["model"]["layers"], input_dim, seed=config.training.seed,
                        dtype=config.model.dtype)
    net = Net(model, config.data.batch_size)
    loss_options = config.loss.model_dump()
    loss, penalties = build_loss(loss_options), build_regularizers(loss_options)
    optimizer = build_optimizer(config.optimizer.name, **optimizer_kwargs(config))
    return [overview(net), forward(net, loss, penalties), backward(net, loss, penalties),
            update(config, optimizer, model.n_params), parameters(net)]


def overview(net: Net) -> Section:
    m, plural = net.model, lambda n, word: f"{n:,} {word}{'s' * (n != 1)}"
    return Section(f"{m.dtype} network, {plural(m.input_dim, 'input')} -> "
                   f"{plural(m.output_dim, 'output')}, {m.n_params:,} parameters", [], [
        (f"x {net.shape(-1)}: a batch of B = {net.batch} examples (data.batch_size), one per row; the last "
         "batch of an epoch can be smaller. Each layer's output is named by its type and its index in layers: "
         "z for dense (layers.1 gives z1 = ... @ W1 + b1), a for an activation, h for dropout and batch norm. "
         "dname means dL/dname; sums and means over the batch run down the rows.")])


# -- forward ---------------------------------------------------------------------------------------

def forward(net: Net, loss, penalties) -> Section:
    lines, notes = [], []
    for i, layer in enumerate(net.model.layers):
        terms = net.terms(i)
        lines += labelled(f"layers.{i}", layer.equations(terms))
        notes += layer.forward_notes(terms)
    lines += loss_lines(net, loss)
    lines += [penalty_line(net, r) for r in penalties]
    if penalties:
        notes.append("train_loss includes the penalties; val_loss and the test loss do not.")
    return Section("Forward (training mode)", lines, notes)


def labelled(label: str, rows: list[tuple[str, str]]) -> list[Line]:
    """A layer's (math, shapes) rows as lines, its label on the first."""
    return [Line(label if j == 0 else "", math, shapes) for j, (math, shapes) in enumerate(rows)]


def loss_lines(net: Net, loss) -> list[Line]:
    """The loss's own equation, one step a line, on the network's output; its symbols' values on the last."""
    out = net.name(len(net.model.layers) - 1)
    steps = substitute(loss.equation, {"z": out}).split(";  ")
    if getattr(loss, "label_smoothing", None) == 0:
        steps = [("q = onehot(y)" if step.startswith("q =") else step) for step in steps]
    shape = net.shape(len(net.model.layers) - 1)
    target = f"y: {net.batch} class labels" if loss.kind == "multiclass" else f"y {shape}"
    lines = [Line("", step, f"q {shape}" if step.startswith("q =") else "") for step in steps]
    lines[0].label, lines[0].shapes = "loss", f"{out} {shape}, {target}"
    symbols = loss_symbols(net, loss, " ".join(steps))
    lines[-1].shapes = f"{lines[0].shapes}; {symbols}" if len(lines) == 1 else symbols
    return lines


def loss_symbols(net: Net, loss, text: str) -> str:
    """'N = B * k = 32 * 1 = 32', 'B = 64, C = 10', 'delta = 1.0': the values of what the formula names."""
    k, found = net.model.output_dim, []
    if re.search(r"\bN\b", text):
        found.append(f"N = B * k = {net.batch} * {k} = {net.batch * k}")
    elif re.search(r"\bB\b", text):
        found.append(f"B = {net.batch}")
    if re.search(r"\bC\b", text):
        found.append(f"C = {k}")
    found += [f"{name} = {value:g}" for name, value in vars(loss).items() if re.search(rf"\b{name}\b", text)]
    return ", ".join(found)


def penalized(net: Net, r) -> list[str]:
    """W1, b1, ...: the parameters a penalty applies to (model.py's names, read as the regularizer reads them)."""
    return [f"{layer.param_symbol(name)}{i}" for i, layer in enumerate(net.model.layers) for name in layer.params
            if r.applies_to(f"layers.{i}.{name}")]


def penalty_name(r) -> str:
    return type(r).__name__.lower()          # l1, l2: the config keys


def penalty_line(net: Net, r) -> Line:
    name = penalty_name(r)
    return Line("penalty", f"L = L + {substitute(r.equation, {'lam': name})}",
                f"summed over {', '.join(penalized(net, r))}; {name} = {r.lam:g}")


# -- backward --------------------------------------------------------------------------------------

def backward(net: Net, loss, penalties) -> Section:
    last = len(net.model.layers) - 1
    out = net.name(last)
    lines = [Line("loss", substitute(loss.derivative, {"z": out, "dz": f"d{out}"}), f"d{out} {net.shape(last)}")]
    first = net.model.first_with_params
    for i in range(last, first - 1, -1):
        lines += backward_lines(net, i, penalties)
    notes = ["Every gradient is of the batch-mean loss, so its scale does not change with B."]
    if first > 0:
        below = "layers.0 holds" if first == 1 else f"layers.0 to layers.{first - 1} hold"
        notes.append(f"{below} no parameters and come{'s' * (first == 1)} before every layer that does: "
                     "model.backward never runs them.")
    if penalties:
        notes.append("The penalty terms are added to the gradients after model.backward (train_step), before "
                     "clipping and the update.")
    return Section("Backward (dname = dL/dname, from the loss down)", lines, notes)


def backward_lines(net: Net, i: int, penalties) -> list[Line]:
    """The layer's own backward equations; at the lowest layer model.backward runs, a note in place of its dx."""
    terms = net.terms(i, penalties)
    lines = labelled(f"layers.{i}", net.model.layers[i].backward_equations(terms))
    if not terms.input_grad:
        lines.append(Line("", f"(d{terms.x} is not computed: no layer below needs it)"))
    return lines


def penalty_terms(net: Net, penalties, symbol: str) -> str:
    """' + l2 * W1' for each penalty on this parameter, from the regularizer's own derivative text."""
    terms = []
    for r in penalties:
        if symbol in penalized(net, r):
            term = r.derivative.split("+=", 1)[1].strip()
            terms.append(substitute(term, {"lam": penalty_name(r), "W": symbol}))
    return "".join(f" + {t}" for t in terms)


# -- the update ------------------------------------------------------------------------------------

def update(config: Config, optimizer: Optimizer, n: int) -> Section:
    name = config.optimizer.name
    rules = [text for condition, text in optimizer.update if holds(optimizer, condition)]
    lines = clip_lines(config.training) + [Line(name if j == 0 else "", text) for j, text in enumerate(rules)]
    values = {k: v for k, v in optimizer_kwargs(config).items() if any(re.search(rf"\b{k}\b", t) for t in rules)}
    if values:
        lines.append(Line("", "with " + ", ".join(f"{k} = {v:g}" for k, v in values.items())))
    lines += schedule_lines(config)
    notes = [(f"p, g and every state array are flat vectors of all {n:,} parameters, updated in place; "
              "the formulas are PyTorch's torch.optim ones.")]
    if any(re.search(r"\bt\b", text) for text in rules):
        notes.append("t counts the optimizer's steps from 1.")
    return Section(f"Update: {name}, once per batch (g = dL/dp)", lines, notes)


def clip_lines(training) -> list[Line]:
    """Gradient clipping, as train_step applies it between the penalties and the update."""
    lines = []
    if training.clip_grad_norm:
        lines.append(Line("clip", "g = g * max_norm / (||g|| + 1e-6)   if ||g|| > max_norm",
                          f"max_norm = {training.clip_grad_norm:g} (training.clip_grad_norm)"))
    if training.clip_grad_value:
        lines.append(Line("clip", "g = clip(g, -c, c)", f"c = {training.clip_grad_value:g} (training.clip_grad_value)"))
    return lines


def holds(optimizer: Optimizer, condition: str) -> bool:
    """An `update` condition: attribute names joined by ' & ', each truthy, or falsy with a leading '!'."""
    parts = [part.strip() for part in condition.split("&") if part.strip()]
    return all(bool(getattr(optimizer, p.lstrip("!"))) != p.startswith("!") for p in parts)


def schedule_lines(config: Config) -> list[Line]:
    """lr at each step, in the schedule's own words (its docstring), with its options."""
    schedule, lr = config.schedule.model_dump(), config.optimizer.lr
    cls = SCHEDULES[schedule["name"]]
    words = " ".join((cls.__doc__ or schedule["name"]).split()).split(". ")[0].rstrip(".")
    words = words[0].lower() + words[1:] if words[1:2].islower() else words
    options = {k: v for k, v in schedule.items() if k != "name" and v is not None and
               not (k == "warmup_epochs" and v == 0)}
    values = [f"lr = {lr:g} (optimizer.lr)", *(f"{k} = {v:g}" for k, v in options.items()
                                               if isinstance(v, (int, float)) and not isinstance(v, bool))]
    lines = [Line("lr", f"{schedule['name']} schedule: {words}"), Line("", "with " + ", ".join(values))]
    if options.get("warmup_epochs"):
        lines.append(Line("", "warmup: lr * min(1, (step + 1) / warmup_steps) at step 0, 1, ...,  warmup_steps = "
                              "max(1, round(warmup_epochs * batches per epoch))"))
    return lines


# -- parameters ------------------------------------------------------------------------------------

def parameters(net: Net) -> Section:
    lines = [parameter_line(i, layer) for i, layer in enumerate(net.model.layers) if layer.params]
    lines.append(Line("total", f"{net.model.n_params:,} parameters"))
    return Section("Parameters", lines)


def parameter_line(i: int, layer) -> Line:
    """'W1 784 x 128 + b1 128  = 100,480', and the buffers saved beside the parameters (batch norm's statistics)."""
    math = " + ".join(f"{layer.param_symbol(name)}{i} {' x '.join(map(str, p.shape))}"
                      for name, p in layer.params.items())
    count = f"= {sum(p.size for p in layer.params.values()):,}"
    if layer.buffers:
        names = ", ".join(f"{name}{i}" for name in layer.buffers)
        count += f" (and {names}: {sum(b.size for b in layer.buffers.values()):,} values, not trained)"
    return Line(f"layers.{i}", math, count)


# -- text ------------------------------------------------------------------------------------------

MATH_COLUMN = 44   # an equation longer than this puts its shapes on the next line


def render_lines(sections: list[Section], width: int = 100) -> list[tuple[str, str]]:
    """(kind, text) for each line: kind is "title" or "text" (a command may style titles)."""
    label_width = max((len(line.label) for s in sections for line in s.lines), default=0)
    out = []
    for section in sections:
        out.append(("title", section.title))
        math_width = max((len(line.math) for line in section.lines if len(line.math) <= MATH_COLUMN), default=0)
        for line in section.lines:
            out += [("text", text) for text in _line(line, label_width, math_width, width)]
        for note in section.notes:
            out += [("text", text) for text in textwrap.wrap(note, width, initial_indent="  ", subsequent_indent="  ")]
        out.append(("text", ""))
    return out[:-1]


def render(sections: list[Section], width: int = 100) -> str:
    """The whole explanation as plain text."""
    return "\n".join(text for _, text in render_lines(sections, width)) + "\n"


def _line(line: Line, label_width: int, math_width: int, width: int) -> list[str]:
    """`  label  math  shapes`, the shapes in a column; what does not fit goes on the next lines."""
    start = 2 + label_width + 2
    head = f"  {line.label:<{label_width}}  "
    column = start + math_width + 2
    if len(line.math) <= math_width and column + len(line.shapes) <= width:
        return [f"{head}{line.math:<{math_width}}  {line.shapes}".rstrip()]
    if start + len(line.math) + 2 + len(line.shapes) <= width:   # no room in the column, but on the line
        return [f"{head}{line.math}  {line.shapes}".rstrip()]
    rows = textwrap.wrap(line.math, width - start, subsequent_indent="    ", break_on_hyphens=False)
    rows = [head + rows[0]] + [" " * start + r for r in rows[1:]]
    if line.shapes:
        column = column if column + len(line.shapes) <= width else start + 4
        rows += textwrap.wrap(line.shapes, width, initial_indent=" " * column, subsequent_indent=" " * (column + 2),
                              break_on_hyphens=False)
    return rows
