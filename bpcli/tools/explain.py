"""The forward and backward equations of a configured network, layer by layer, with every shape.

    explain(cfg, input_dim) -> list[Section]        render(sections, width) -> str

What the articles on backpropagation derive for a generic network, written out
for the user's own: each layer's forward equation with the shapes of its
matrices for the configured batch size B, the loss and its gradient, the chain
rule back through every layer, the penalties and the optimizer's update. The
formulas are the components' own `equation`, `derivative` and `update` texts
(activations.py, losses.py, regularizers.py, optimizers.py), kept next to the
code they describe; this module only names the variables and adds the shapes.

Names: a layer's output is z (dense), a (activation) or h (dropout, batch
norm), numbered by its layer (layers.3 -> a3), as are its parameters (W3, b3,
gamma3, beta3); the input is x, and dname is dL/dname, as everywhere in bpcli.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from bpcli.nn.layers import ActivationLayer, BatchNorm, Dense, Dropout
from bpcli.nn.model import Model, build_model
from bpcli.optim.optimizers import Optimizer, build_optimizer
from bpcli.optim.schedules import SCHEDULES
from bpcli.training.trainer import build_loss, build_regularizers


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
        if i < 0:
            return "x"
        layer = self.model.layers[i]
        return f"{'z' if isinstance(layer, Dense) else 'a' if isinstance(layer, ActivationLayer) else 'h'}{i}"

    def width(self, i: int) -> int:
        layers = self.model.layers[:i + 1]
        return next((layer.units for layer in reversed(layers) if isinstance(layer, Dense)), self.model.input_dim)

    def shape(self, i: int) -> str:
        return f"({self.batch}, {self.width(i)})"

    @property
    def first(self) -> int:
        """The first layer with parameters: model.backward stops there, without its input gradient."""
        return next((i for i, layer in enumerate(self.model.layers) if layer.params), len(self.model.layers))


def explain(cfg: dict, input_dim: int) -> list[Section]:
    """The sections `bpcli explain` prints, for the resolved config `cfg`."""
    model = build_model(cfg["model"]["layers"], input_dim, seed=cfg["training"]["seed"], dtype=cfg["model"]["dtype"])
    net = Net(model, cfg["data"]["batch_size"])
    loss, penalties = build_loss(cfg["loss"]), build_regularizers(cfg["loss"])
    options = {k: v for k, v in cfg["optimizer"].items() if k not in ("name", "lr")}
    optimizer = build_optimizer(cfg["optimizer"]["name"], **options)
    return [overview(net, cfg), forward(net, loss, penalties), backward(net, loss, penalties),
            update(cfg, optimizer, model.n_params), parameters(net)]


def substitute(text: str, names: dict[str, str]) -> str:
    """Rename whole words: substitute("dz = da * (z > 0)", {"z": "z1", "a": "a2", ...})."""
    return re.sub(r"\b\w+\b", lambda m: names.get(m.group(0), m.group(0)), text)


def overview(net: Net, cfg: dict) -> Section:
    m, plural = net.model, lambda n, word: f"{n:,} {word}{'s' * (n != 1)}"
    return Section(f"{cfg['model']['dtype']} network, {plural(m.input_dim, 'input')} -> "
                   f"{plural(m.output_dim, 'output')}, {m.n_params:,} parameters", [], [
        (f"x {net.shape(-1)}: a batch of B = {net.batch} examples (data.batch_size), one per row; the last "
         "batch of an epoch can be smaller. Each layer's output is named by its type and its index in layers: "
         "z for dense (layers.1 gives z1 = ... @ W1 + b1), a for an activation, h for dropout and batch norm. "
         "dname means dL/dname; sums and means over the batch run down the rows.")])


# -- forward ---------------------------------------------------------------------------------------

def forward(net: Net, loss, penalties) -> Section:
    lines, notes = [], []
    for i, layer in enumerate(net.model.layers):
        lines += forward_lines(net, i)
        if isinstance(layer, Dropout) and layer.threshold and layer.threshold / 65536 != layer.rate:
            notes.append(f"layers.{i}: rate {layer.rate:g} is drawn as {layer.threshold}/65536 = "
                         f"{layer.threshold / 65536:.8g} (16-bit mask draws), in the mask and the scale alike.")
    lines += loss_lines(net, loss)
    lines += [penalty_line(net, r) for r in penalties]
    if penalties:
        notes.append("train_loss includes the penalties; val_loss and the test loss do not.")
    return Section("Forward (training mode)", lines, notes)


def forward_lines(net: Net, i: int) -> list[Line]:
    layer, u, v, label = net.model.layers[i], net.name(i - 1), net.name(i), f"layers.{i}"
    n_in, n = net.width(i - 1), net.width(i)
    if isinstance(layer, Dense):
        return [Line(label, f"{v} = {u} @ W{i} + b{i}",
                     f"{u} {net.shape(i - 1)} @ W{i} ({n_in}, {n}) + b{i} ({n},) -> {net.shape(i)}")]
    if isinstance(layer, ActivationLayer):
        return [Line(label, substitute(layer.activation.equation, {"z": u, "a": v}),
                     f"{v} {net.shape(i)}{activation_options(layer)}")]
    if isinstance(layer, Dropout):
        return [Line(label, f"{v} = {u} * m{i} / (1 - rate)",
                     f"m{i} {net.shape(i)} ~ Bernoulli(1 - rate), rate = {layer.rate:g}"),
                Line("", f"(evaluation: {v} = {u})")]
    return batchnorm_forward(layer, i, u, v, net)


def batchnorm_forward(layer: BatchNorm, i: int, u: str, v: str, net: Net) -> list[Line]:
    n = net.width(i)
    return [Line(f"layers.{i}", f"mu{i} = batch mean of {u}", f"({n},)"),
            Line("", f"var{i} = batch mean of ({u} - mu{i})^2", f"({n},)"),
            Line("", f"xhat{i} = ({u} - mu{i}) / sqrt(var{i} + eps)", f"{net.shape(i)}; eps = {layer.eps:g}"),
            Line("", f"{v} = gamma{i} * xhat{i} + beta{i}", f"gamma{i}, beta{i} ({n},) -> {net.shape(i)}"),
            Line("", f"running_mean{i} = (1 - momentum) * running_mean{i} + momentum * mu{i}",
                 f"momentum = {layer.momentum:g}"),
            Line("", f"running_var{i} = (1 - momentum) * running_var{i} + momentum * var{i} * B / (B - 1)"),
            Line("", f"(evaluation: running_mean{i}, running_var{i} in place of mu{i}, var{i})")]


def activation_options(layer: ActivationLayer) -> str:
    """', slope = 0.01' for the options its formulas name."""
    text = layer.activation.equation + layer.activation.derivative
    values = {k: v for k, v in vars(layer.activation).items() if re.search(rf"\b{k}\b", text)}
    return "".join(f", {k} = {v:g}" for k, v in values.items())


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
    symbol = {"weight": "W", "bias": "b"}
    return [f"{symbol[name.split('.')[2]]}{name.split('.')[1]}" for name in net.model.params if r.applies_to(name)]


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
    for i in range(last, net.first - 1, -1):
        lines += backward_lines(net, i, penalties)
    notes = ["Every gradient is of the batch-mean loss, so its scale does not change with B."]
    if net.first > 0:
        below = "layers.0 holds" if net.first == 1 else f"layers.0 to layers.{net.first - 1} hold"
        notes.append(f"{below} no parameters and come{'s' * (net.first == 1)} before every layer that does: "
                     "model.backward never runs them.")
    if penalties:
        notes.append("The penalty terms are added to the gradients after model.backward (train_step), before "
                     "clipping and the update.")
    return Section("Backward (dname = dL/dname, from the loss down)", lines, notes)


def backward_lines(net: Net, i: int, penalties) -> list[Line]:
    layer, u, v, label = net.model.layers[i], net.name(i - 1), net.name(i), f"layers.{i}"
    n_in, n = net.width(i - 1), net.width(i)
    skip = Line("", f"(d{u} is not computed: no layer below needs it)") if i == net.first else None
    if isinstance(layer, Dense):
        return [Line(label, f"dW{i} = {u}.T @ d{v}{penalty_terms(net, penalties, f'W{i}')}",
                     f"{u}.T ({n_in}, {net.batch}) @ d{v} {net.shape(i)} -> ({n_in}, {n})"),
                Line("", f"db{i} = batch sum of d{v}{penalty_terms(net, penalties, f'b{i}')}", f"({n},)"),
                skip or Line("", f"d{u} = d{v} @ W{i}.T",
                             f"d{v} {net.shape(i)} @ W{i}.T ({n}, {n_in}) -> {net.shape(i - 1)}")]
    if isinstance(layer, ActivationLayer):
        names = {"z": u, "a": v, "dz": f"d{u}", "da": f"d{v}"}
        return [Line(label, substitute(layer.activation.derivative, names),
                     f"d{u} {net.shape(i)}{activation_options(layer)}")]
    if isinstance(layer, Dropout):
        return [Line(label, f"d{u} = d{v} * m{i} / (1 - rate)", f"d{u} {net.shape(i)}, the forward pass's mask")]
    return [Line(label, f"dgamma{i} = batch sum of d{v} * xhat{i}", f"({n},)"),
            Line("", f"dbeta{i} = batch sum of d{v}", f"({n},)"),
            *([skip] if skip else [
                Line("", f"dxhat{i} = d{v} * gamma{i}", net.shape(i)),
                Line("", f"d{u} = (B * dxhat{i} - sum(dxhat{i}) - xhat{i} * sum(dxhat{i} * xhat{i})) "
                         f"/ (B * sqrt(var{i} + eps))", f"batch sums; d{u} {net.shape(i)}")])]


def penalty_terms(net: Net, penalties, symbol: str) -> str:
    """' + l2 * W1' for each penalty on this parameter, from the regularizer's own derivative text."""
    terms = []
    for r in penalties:
        if symbol in penalized(net, r):
            term = r.derivative.split("+=", 1)[1].strip()
            terms.append(substitute(term, {"lam": penalty_name(r), "W": symbol}))
    return "".join(f" + {t}" for t in terms)


# -- the update ------------------------------------------------------------------------------------

def update(cfg: dict, optimizer: Optimizer, n: int) -> Section:
    name, training = cfg["optimizer"]["name"], cfg["training"]
    lines = []
    if training.get("clip_grad_norm"):
        lines.append(Line("clip", "g = g * max_norm / (||g|| + 1e-6)   if ||g|| > max_norm",
                          f"max_norm = {training['clip_grad_norm']:g} (training.clip_grad_norm)"))
    if training.get("clip_grad_value"):
        lines.append(Line("clip", "g = clip(g, -c, c)", f"c = {training['clip_grad_value']:g} "
                                                       "(training.clip_grad_value)"))
    rules = [text for condition, text in optimizer.update if holds(optimizer, condition)]
    lines += [Line(name if j == 0 else "", text) for j, text in enumerate(rules)]
    values = {k: v for k, v in cfg["optimizer"].items() if k not in ("name", "lr") and
              any(re.search(rf"\b{k}\b", text) for text in rules)}
    if values:
        lines.append(Line("", "with " + ", ".join(f"{k} = {v:g}" for k, v in values.items())))
    lines += schedule_lines(cfg)
    notes = [(f"p, g and every state array are flat vectors of all {n:,} parameters, updated in place; "
              "the formulas are PyTorch's torch.optim ones.")]
    if any(re.search(r"\bt\b", text) for text in rules):
        notes.append("t counts the optimizer's steps from 1.")
    return Section(f"Update: {name}, once per batch (g = dL/dp)", lines, notes)


def holds(optimizer: Optimizer, condition: str) -> bool:
    """An `update` condition: attribute names joined by ' & ', each truthy, or falsy with a leading '!'."""
    parts = [part.strip() for part in condition.split("&") if part.strip()]
    return all(bool(getattr(optimizer, p.lstrip("!"))) != p.startswith("!") for p in parts)


def schedule_lines(cfg: dict) -> list[Line]:
    """lr at each step, in the schedule's own words (its docstring), with its options."""
    schedule, lr = cfg["schedule"], cfg["optimizer"]["lr"]
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
    lines = []
    for i, layer in enumerate(net.model.layers):
        n_in, n = net.width(i - 1), net.width(i)
        if isinstance(layer, Dense):
            lines.append(Line(f"layers.{i}", f"W{i} {n_in} x {n} + b{i} {n}", f"= {(n_in + 1) * n:,}"))
        elif isinstance(layer, BatchNorm):
            lines.append(Line(f"layers.{i}", f"gamma{i} {n} + beta{i} {n}",
                              f"= {2 * n:,} (and running_mean{i}, running_var{i}: {2 * n:,} values, not trained)"))
    lines.append(Line("total", f"{net.model.n_params:,} parameters"))
    return Section("Parameters", lines)


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
