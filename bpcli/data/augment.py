"""Random distortions of training images: shifts, flips, rotations, scaling, shear and elastic distortions.

    Augmenter(options, image_shape, preprocessor, seed)(x, epoch, batch) -> x'

Each image of a batch is resampled through an affine map of its own about the
image centre (shift, a left-right mirror if asked, rotation, scale, shear), and,
if asked, an elastic distortion (Simard, Steinkraus and Platt 2003): a field of uniform noise in
[-1, 1] for each pixel and axis, smoothed by a Gaussian of `sigma` pixels and
multiplied by `alpha`, added to where each pixel is read from. Reading is
bilinear, so every output pixel is a weighted mean of input pixels (the
range is kept) and an integer shift moves an image by exactly that many
pixels; what comes from outside the image is background (0 before
preprocessing).

Everything is vectorised over the batch (coordinates are (batch, rows, cols)
arrays; no Python loop over images). The random draws come from a generator
seeded with (seed, epoch, batch), so a resumed run augments each batch as an
uninterrupted one does, and augmentation off leaves batches untouched.

The distortions act on pixels as published: a batch is turned back into
pixel values (x / scale + offset), distorted, and preprocessed again.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from bpcli.errors import ConfigError

TAG = 0xA46   # keeps these draws apart from every other generator seeded from the run's seed


class Augmenter:
    def __init__(self, options, image_shape: tuple[int, int], offset: np.ndarray, scale: np.ndarray, seed: int):
        self.options, (self.rows, self.cols), self.seed = options, image_shape, seed
        self.offset, self.scale = offset, scale
        # Shifts and flips alone read every pixel at whole coordinates: a copy, with no weights to apply.
        self.whole_pixels = not (options.rotate or options.scale or options.shear or options.elastic_alpha)
        self.blur = None   # the Gaussian blur of an elastic field, as (rows x rows, cols x cols) matrices
        if options.elastic_alpha > 0:
            kernel = gaussian_kernel(options.elastic_sigma)
            self.blur = blur_matrix(self.rows, kernel), blur_matrix(self.cols, kernel)

    def __call__(self, x: np.ndarray, epoch: int, batch: int) -> np.ndarray:
        """The batch x (n, rows * cols) distorted; the pixels are read in float32 (the batch's own precision)."""
        rng = np.random.default_rng([self.seed, epoch, batch, TAG])
        pixels = (x / self.scale + self.offset).astype(np.float32).reshape(len(x), self.rows, self.cols)
        rows, cols = self.source_coordinates(len(x), rng)
        distorted = bilinear(pixels, rows, cols, whole_pixels=self.whole_pixels).reshape(len(x), -1)
        return ((distorted - self.offset) * self.scale).astype(x.dtype, copy=False)

    def source_coordinates(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Where each output pixel of each image is read from: two (n, rows, cols) float64 arrays.

        The inverse map, output -> input, about the centre c: src = c + M F (p - c - shift), with
        M = shear-and-zoom @ rotation and F a left-right mirror (column -> -column) or not, one 2x2
        matrix M F per image; all pixels of all images in one
        einsum over the grid in homogeneous form (not BLAS: the same sums, in the same order, on
        every machine). An integer shift alone gives integer coordinates exactly.
        """
        o = self.options
        angle = np.deg2rad(rng.uniform(-o.rotate, o.rotate, n))
        shear = np.tan(np.deg2rad(rng.uniform(-o.shear, o.shear, n)))
        zoom = rng.uniform(1 - o.scale, 1 + o.scale, n)
        shift = rng.integers(-o.shift, o.shift, size=(n, 2), endpoint=True) if o.shift else np.zeros((n, 2), int)
        cos, sin = np.cos(angle), np.sin(angle)
        m = np.stack([np.stack([cos, -sin], -1), np.stack([sin - shear * cos, cos + shear * sin], -1)], 1)
        m /= zoom[:, None, None]
        if o.flip:   # drawn only when asked, so every other setting draws what it did before flips existed
            m[:, :, 1] *= np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None]
        centre = np.array([(self.rows - 1) / 2, (self.cols - 1) / 2])
        affine = np.concatenate([m, (centre - np.einsum("nij,nj->ni", m, shift))[:, :, None]], axis=2)
        y, x = np.mgrid[0:self.rows, 0:self.cols].reshape(2, -1) - centre[:, None]
        grid = np.stack([y, x, np.ones_like(y)])                                        # (3, rows * cols)
        rows, cols = np.einsum("nij,jk->ink", affine, grid).reshape(2, n, self.rows, self.cols)
        if self.blur is not None:
            field = rng.uniform(-1, 1, size=(2, n, self.rows, self.cols))
            rows += o.elastic_alpha * smooth(field[0], *self.blur)
            cols += o.elastic_alpha * smooth(field[1], *self.blur)
        return rows, cols


def bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray, whole_pixels: bool = False) -> np.ndarray:
    """images (n, R, C) read at float coordinates (n, R, C): the bilinear mean of the four neighbours,
    0 outside the image. At integer coordinates the weights are 0 and 1: pixels are copied exactly.

    whole_pixels: the caller knows every coordinate is an integer (shifts and flips alone), so the
    pixels are copied without the weights: the same values from one read instead of four weighted
    ones (half the time of a whole augmented batch; a weight of 0 times a neighbour adds +0, which
    would only turn a -0 pixel into +0, and images have none).
    """
    n, height, width = images.shape
    padded = np.zeros((n, height + 2, width + 2), images.dtype)   # a frame of background around each image
    padded[:, 1:-1, 1:-1] = images
    r = np.clip(rows, -1, height) + 1   # in the padded image (>= 0); far outside reads the background frame
    c = np.clip(cols, -1, width) + 1
    pixels = padded.ravel()
    if whole_pixels:   # r and c are whole numbers in [0, height + 1] and [0, width + 1]: the pixel itself
        return pixels.take(flat_index(r.astype(np.intp), c.astype(np.intp), height, width)) + images.dtype.type(0)
    r0 = np.minimum(r.astype(np.intp), height)   # floor, as r >= 0
    c0 = np.minimum(c.astype(np.intp), width)
    base = flat_index(r0.copy(), c0, height, width)
    stride = width + 2
    fr, fc = (r - r0).astype(images.dtype), (c - c0).astype(images.dtype)   # the weights, in the pixels' precision
    top = pixels.take(base) * (1 - fc) + pixels.take(base + 1) * fc
    bottom = pixels.take(base + stride) * (1 - fc) + pixels.take(base + stride + 1) * fc
    return top * (1 - fr) + bottom * fr


def flat_index(r: np.ndarray, c: np.ndarray, height: int, width: int) -> np.ndarray:
    """Where (image i, row r, column c) of a padded (n, height + 2, width + 2) batch is in its flattened
    pixels (r is reused for the result)."""
    r += np.arange(len(r))[:, None, None] * (height + 2)
    r *= width + 2
    r += c
    return r


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian over +-3 sigma (at least one pixel either side)."""
    radius = max(1, math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def blur_matrix(size: int, kernel: np.ndarray) -> np.ndarray:
    """B with (B @ v)[i] = sum_k kernel[k] v[i + k - radius]: a 1-D blur of a length-`size` signal, zero
    beyond its ends, as a matrix (one matrix product blurs a whole batch along an axis)."""
    radius = len(kernel) // 2
    offsets = np.arange(size)[None, :] - np.arange(size)[:, None] + radius   # k for each (i, j)
    inside = (offsets >= 0) & (offsets < len(kernel))
    return np.where(inside, kernel[np.clip(offsets, 0, len(kernel) - 1)], 0.0)


def smooth(field: np.ndarray, blur_rows: np.ndarray, blur_cols: np.ndarray) -> np.ndarray:
    """A Gaussian blur of (n, R, C) fields, separably: down the columns, then along the rows."""
    return blur_rows @ field @ blur_cols.T


def augmenter_for(options, data, seed: int) -> Augmenter | None:
    """The Augmenter of a config's data.augment for prepared data (preprocessing.Prepared), or None if off.

    Only image data can be distorted: rows of a table have no neighbouring pixels.
    """
    if options is None:
        return None
    if data.image_shape is None or len(data.image_shape) != 2:
        raise ConfigError(f"data.augment distorts images, but this dataset's rows are not images (each is "
                          f"{data.input_dim} features): remove data.augment, or train on an image dataset")
    pre = data.preprocessor
    return Augmenter(options, data.image_shape, pre.offset, pre.scale, seed)


def sample_images(dataset, count: int) -> np.ndarray:
    """`count` training images in [0, 1], one of each class in turn (datasets may be sorted by label)."""
    if dataset.x_train.ndim != 3:
        raise ConfigError(f"{dataset.name} has rows of features, not images: there is nothing to show")
    labels = np.asarray(dataset.y_train)
    by_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    picks = [members[i // len(by_class)] for i, members in zip(range(count), itertools.cycle(by_class))
             if i // len(by_class) < len(members)]
    images = dataset.x_train[picks].astype(np.float64)
    return images / 255 if dataset.x_train.dtype == np.uint8 else images


def show_augmented(originals: np.ndarray, options, draws: int) -> list[np.ndarray]:
    """`draws` distorted versions of (k, rows, cols) images in [0, 1], as batches 0, 1, ... of epoch 0 would be."""
    k, rows, cols = originals.shape
    augmenter = Augmenter(options, (rows, cols), np.zeros(rows * cols), np.ones(rows * cols), seed=0)
    flat = originals.reshape(k, -1)
    return [augmenter(flat, 0, batch).reshape(k, rows, cols) for batch in range(draws)]
