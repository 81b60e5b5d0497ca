"""data.augment: distortions of training images, vectorised, drawn from (seed, epoch, batch), resumable."""

from types import SimpleNamespace

import numpy as np
import pytest

from bpcli.config.loading import parse_config_text
from bpcli.data.augment import Augmenter, bilinear
from bpcli.data.catalog import load_dataset
from bpcli.errors import ConfigError
from bpcli.training.run import train_run
from bpcli.training.trainer import Trainer

OFF = dict(shift=0, rotate=0.0, scale=0.0, shear=0.0, elastic_alpha=0.0, elastic_sigma=4.0, flip=False)


def options(**given):
    return SimpleNamespace(**{**OFF, **given})


@pytest.fixture(scope="module")
def mnist():
    """200 real MNIST digits from all ten classes (mnist-mini is sorted by label) as rows in [0, 1], labels."""
    dataset = load_dataset("mnist-mini")
    pick = np.arange(0, len(dataset.x_train), len(dataset.x_train) // 200)[:200]
    return dataset.x_train[pick].reshape(200, -1).astype(np.float32) / 255, dataset.y_train[pick]


@pytest.fixture(scope="module")
def digits(mnist) -> np.ndarray:
    return mnist[0][:64]


def augmenter(opts, seed: int = 0) -> Augmenter:
    return Augmenter(opts, (28, 28), np.zeros(784), np.ones(784), seed)


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """image moved dy rows down and dx columns right, background coming in."""
    out = np.zeros_like(image)
    rows, cols = image.shape
    out[max(dy, 0):rows + min(dy, 0), max(dx, 0):cols + min(dx, 0)] = \
        image[max(-dy, 0):rows + min(-dy, 0), max(-dx, 0):cols + min(-dx, 0)]
    return out


def test_a_shift_of_k_pixels_moves_each_image_by_exactly_a_whole_shift(digits):
    out = augmenter(options(shift=3))(digits, epoch=0, batch=0).reshape(-1, 28, 28)
    images = digits.reshape(-1, 28, 28)
    moves = []
    for original, moved in zip(images, out):
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if np.array_equal(moved, shifted(original, dy, dx))]
        assert found, "not an exact shift of at most 3 pixels"
        moves.append(found[0])
    assert len(set(moves)) > 10   # drawn per image, not one shift for the batch


def test_a_flip_mirrors_about_half_the_images_exactly_and_leaves_the_others(digits):
    out = augmenter(options(flip=True))(digits, epoch=0, batch=0).reshape(-1, 28, 28)
    images = digits.reshape(-1, 28, 28)
    mirrored = [np.array_equal(moved, original[:, ::-1]) for original, moved in zip(images, out)]
    kept = [np.array_equal(moved, original) for original, moved in zip(images, out)]
    assert all(m != k for m, k in zip(mirrored, kept))   # each image exactly one or the other
    assert 16 < sum(mirrored) < 48


def test_a_flip_with_a_shift_moves_the_mirrored_image_by_a_whole_shift(digits):
    out = augmenter(options(flip=True, shift=2))(digits, epoch=0, batch=1).reshape(-1, 28, 28)
    images = digits.reshape(-1, 28, 28)
    mirrored = 0
    for original, moved in zip(images, out):
        as_is = any(np.array_equal(moved, shifted(original, dy, dx)) for dy in range(-2, 3) for dx in range(-2, 3))
        mirror = any(np.array_equal(moved, shifted(original[:, ::-1], dy, dx))
                     for dy in range(-2, 3) for dx in range(-2, 3))
        assert as_is or mirror
        mirrored += mirror and not as_is
    assert mirrored > 10


@pytest.mark.parametrize("opts", [dict(shift=8), dict(flip=True, shift=3), dict(flip=True)])
def test_shifts_and_flips_copy_the_pixels_the_weighted_reading_gives(mnist, opts):
    """The whole-pixel shortcut gives the bits of the bilinear reading, background coming in included."""
    x = (mnist[0] - 0.13) / 0.31   # as standardized data: negative values, and none of them -0
    fast = Augmenter(options(**opts), (28, 28), np.full(784, 0.13), np.full(784, 1 / 0.31), seed=5)
    weighted = Augmenter(options(**opts), (28, 28), np.full(784, 0.13), np.full(784, 1 / 0.31), seed=5)
    weighted.whole_pixels = False
    assert fast.whole_pixels
    assert np.array_equal(fast(x, 2, 3), weighted(x, 2, 3))
    assert fast(x, 2, 3).tobytes() == weighted(x, 2, 3).tobytes()


def test_bilinear_reads_integer_coordinates_exactly_and_background_outside():
    image = np.arange(12, dtype=np.float64).reshape(1, 3, 4)
    rows, cols = np.mgrid[0:3, 0:4].astype(np.float64)
    assert np.array_equal(bilinear(image, rows[None], cols[None]), image)
    assert np.array_equal(bilinear(image, rows[None] + 0.5, cols[None])[0, 0], (image[0, 0] + image[0, 1]) / 2)
    assert bilinear(image, np.full((1, 1, 1), -5.0), np.zeros((1, 1, 1)))[0, 0, 0] == 0


def test_the_same_seed_epoch_and_batch_give_the_same_batch_and_others_do_not(digits):
    opts = options(shift=2, rotate=15, scale=0.1, shear=10, elastic_alpha=8, elastic_sigma=4)
    first = augmenter(opts, seed=3)(digits, epoch=5, batch=7)
    assert np.array_equal(first, augmenter(opts, seed=3)(digits, epoch=5, batch=7))   # e.g. after a resume
    assert not np.array_equal(first, augmenter(opts, seed=3)(digits, epoch=5, batch=8))
    assert not np.array_equal(first, augmenter(opts, seed=4)(digits, epoch=5, batch=7))


def test_elastic_distortion_keeps_the_pixel_range_and_the_digit(mnist):
    images, labels = mnist
    out = augmenter(options(elastic_alpha=34, elastic_sigma=4))(images, epoch=0, batch=0)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert np.abs(out - images).mean() > 0.02   # distorted, visibly
    # Still the same digit: a nearest-neighbour reader (cosine) names the distorted digits at least as well
    # as it names each original from the other originals (0.785 here; chance is 0.1).
    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    others = unit(images) @ unit(images).T
    np.fill_diagonal(others, -1)
    baseline = (labels[others.argmax(axis=1)] == labels).mean()
    nearest = (unit(out) @ unit(images).T).argmax(axis=1)
    assert (labels[nearest] == labels).mean() >= baseline > 0.5


TINY = """
model:
  layers:
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 10}
data: {dataset: mnist-mini, batch_size: 500 AUGMENT}
training: {epochs: EPOCHS, seed: 1}
diagnostics: {enabled: false}
output: {dir: RUNS, name: NAME}
"""


def tiny(tmp_path, name: str, epochs: int, augment: str = ""):
    text = TINY.replace("RUNS", str(tmp_path)).replace("NAME", name).replace("EPOCHS", str(epochs))
    return parse_config_text(text.replace(" AUGMENT", augment))


def test_augmentation_off_trains_on_the_batches_as_they_are(tmp_path, monkeypatch):
    seen = []
    real = Trainer.run_batch
    monkeypatch.setattr(Trainer, "run_batch", lambda self, x, y: (seen.append(x.copy()), real(self, x, y))[1])
    train_run(tiny(tmp_path, "off", 1), "off.yaml")
    from bpcli.training.run import prepare_data
    from bpcli.training.step import epoch_order

    data = prepare_data(tiny(tmp_path, "again", 1))
    order = epoch_order(1, 0, len(data.x_train))
    assert len(seen) == 9 and all(np.array_equal(x, data.x_train[order[i * 500:(i + 1) * 500]])
                                  for i, x in enumerate(seen))


def test_an_augmented_run_resumed_ends_bit_for_bit_as_one_run_in_one_go(tmp_path):
    from bpcli.training.checkpoint import load_checkpoint

    augment = ", augment: {shift: 2, rotate: 10, elastic_alpha: 6}"
    train_run(tiny(tmp_path, "whole", 2, augment), "whole.yaml")
    train_run(tiny(tmp_path, "halves", 1, augment), "halves.yaml")
    train_run(tiny(tmp_path, "halves", 2, augment), "halves.yaml", resume=str(tmp_path / "halves"))
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.safetensors").tensors
    halves = load_checkpoint(tmp_path / "halves" / "checkpoints" / "last.safetensors").tensors
    assert sorted(whole) == sorted(halves) and all(np.array_equal(whole[k], halves[k]) for k in whole)


def test_augmenting_rows_that_are_not_images_is_a_config_error(tmp_path):
    config = parse_config_text(TINY.replace("mnist-mini", "spirals").replace("units: 10", "units: 3")
                               .replace("RUNS", str(tmp_path)).replace("NAME", "s").replace("EPOCHS", "1")
                               .replace(" AUGMENT", ", augment: {shift: 1}"))
    with pytest.raises(ConfigError, match="data.augment distorts images, but this dataset's rows are not images"):
        train_run(config, "s.yaml")


def test_bpcli_time_shows_what_augmentation_costs_as_a_row_of_its_own(tmp_path):
    from typer.testing import CliRunner

    from bpcli.cli.app import app

    config = tmp_path / "a.yaml"
    config.write_text(TINY.replace(" AUGMENT", ", augment: {shift: 2, elastic_alpha: 8}").replace("EPOCHS", "1")
                      .replace("RUNS", str(tmp_path)).replace("NAME", "t"))
    result = CliRunner().invoke(app, ["time", str(config), "--repeats", "3", "--synthetic", "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert report["augment_ms"] > 0 and report["augment_epoch_s"] == pytest.approx(
        report["augment_ms"] * report["batches_per_epoch"] / 1e3)
    text = CliRunner().invoke(app, ["time", str(config), "--repeats", "3", "--synthetic"]).output
    assert "data.augment, per batch: " in text
    plain = CliRunner().invoke(app, ["time", str(config), "--repeats", "3",
                                     "--synthetic", "--json", "--set", "data.augment=null"])
    assert "augment_ms" not in json.loads(plain.stdout)


def test_data_show_draws_originals_and_their_distortions(tmp_path):
    from typer.testing import CliRunner

    from bpcli.cli.app import app
    from bpcli.data.augment import sample_images, show_augmented

    config = tmp_path / "a.yaml"
    config.write_text(TINY.replace(" AUGMENT", ", augment: {shift: 2, rotate: 10}").replace("EPOCHS", "1")
                      .replace("RUNS", str(tmp_path)).replace("NAME", "t"))
    result = CliRunner().invoke(app, ["data", "show", "mnist-mini", "--augment", str(config), "--images", "6",
                                      "--draws", "2", "-o", str(tmp_path / "show.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "show.png").read_bytes().startswith(b"\x89PNG")
    originals = sample_images(load_dataset("mnist-mini"), 6)
    assert originals.shape == (6, 28, 28) and 0 <= originals.min() and originals.max() <= 1
    versions = show_augmented(originals, parse_config_text(config.read_text()).data.augment, 2)
    assert len(versions) == 2 and not np.array_equal(versions[0], versions[1])
    refused = CliRunner().invoke(app, ["data", "show", "spirals", "-o", str(tmp_path / "no.png")])
    assert refused.exit_code == 2 and "spirals has rows of features, not images" in refused.output
