"""What the sweep tests share: the base config every test sweep starts from (small spiral networks)."""


def spirals_base(n: int = 300, epochs: int = 6, units: int = 16, nesterov: bool = True, extra: str = "") -> str:
    """A base config: one hidden ReLU layer, SGD with momentum, 3 spiral arms, validation accuracy monitored."""
    return (
        "model:\n"
        "  layers:\n"
        f"    - {{type: dense, units: {units}, activation: relu}}\n"
        "    - {type: dense, units: 3}\n"
        "loss: {name: cross_entropy}\n"
        f"optimizer: {{name: sgd, lr: 0.1, momentum: 0.9{', nesterov: true' if nesterov else ''}}}\n"
        f"data: {{dataset: spirals, options: {{n: {n}, classes: 3, noise: 0.2}}, val_fraction: 0.2, "
        "preprocess: none, batch_size: 32}\n"
        f"training: {{epochs: {epochs}, seed: 0, monitor: val_accuracy}}\n"
        + extra
    )
