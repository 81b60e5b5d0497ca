"""A tiny config the run-level tests share: 8 ReLU units on 300 spiral points, Adam, a couple of epochs."""


def tiny_spirals(epochs: int = 2, extra: str = "") -> str:
    return ("model: {layers: [{type: dense, units: 8, activation: relu}, {type: dense, units: 3}]}\n"
            "optimizer: {name: adam, lr: 0.01}\n"
            "data: {dataset: spirals, batch_size: 128, options: {n: 300}}\n"
            f"training: {{epochs: {epochs}, seed: 0}}\n" + extra)
