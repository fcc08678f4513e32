"""A small fully-convolutional segmenter for digits placed on a canvas, trained from a fixed seed.

Each sample is a 24x24 canvas (pixel values 0..16, like the digits) holding one
or two of scikit-learn's 8x8 digits at pseudo-random positions whose boxes do
not overlap.  The label is a 24x24 mask of class ids: 0 is background and
1 + d marks the ink (pixels above INK_THRESHOLD) of a placed digit d, so there
are 11 classes (recipes/segment_classes.txt).  The model returns per-pixel
probabilities of the 11 classes, class axis last.

Canvases of each split are built only from that split's digits, so train,
calibration and test stay disjoint, and from a generator seeded per split, so
every machine builds the same canvases.
"""
import digits_data
import numpy as np

CANVAS = 24
DIGIT = 8
CLASSES = 11  # background + ten digits
INK_THRESHOLD = 4  # a digit pixel above this value is ink and gets the digit's class
TWO_DIGIT_SHARE = 0.5
# Canvases per split: training reuses its digits at many positions; calibration and
# test use each of their digits once.
TRAIN_CANVASES = 4000
EPOCHS = 14
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
# Training canvases are dimmed by a gain drawn from GAIN_RANGE and get Gaussian noise with a sigma
# drawn up to NOISE_SIGMA (in pixel values, clipped to 0..16), so the model finds ink by its shape
# rather than by one brightness threshold, as in poor light or on a noisy sensor.
GAIN_RANGE = (0.4, 1.0)
NOISE_SIGMA = 1.5
CANVAS_SEEDS = {"train": 101, "calibration": 102, "test": 103}

METADATA = {
    "dataset": (
        f"{CANVAS}x{CANVAS} canvases holding one or two digits at non-overlapping pseudo-random positions, "
        f"from {digits_data.DESCRIPTION}; masks of 11 classes (background, digits 0..9), ink = pixel value > {INK_THRESHOLD}"
    ),
    "seed": 13,
    "architecture": "encoder-decoder CNN: Conv2D + ReLU, max pooling to 6x6, nearest upsampling with skip connections",
    "hyperparameters": {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "optimizer": "adam",
                        "training_canvases": TRAIN_CANVASES, "two_digit_share": TWO_DIGIT_SHARE,
                        "augmentation": f"brightness gain uniform in {GAIN_RANGE}, Gaussian noise sigma uniform in (0, {NOISE_SIGMA})"},
}


def _positions(rng, count):
    """Top-left corners of ``count`` 8x8 boxes on the canvas, no two overlapping (drawn again until they do not)."""
    while True:
        corners = [tuple(int(v) for v in rng.integers(0, CANVAS - DIGIT + 1, size=2)) for _ in range(count)]
        if all(abs(r - r0) >= DIGIT or abs(c - c0) >= DIGIT
               for j, (r, c) in enumerate(corners) for r0, c0 in corners[:j]):
            return corners


def make_canvases(images, labels, seed, canvases=None):
    """Canvases and masks from 8x8 digits (n, 8, 8, 1) and their labels.

    Digits are taken in a seeded random order, one or two per canvas; with
    ``canvases`` set, the digits are reused in fresh orders until that many are made,
    otherwise each digit appears once.
    """
    rng = np.random.default_rng(seed)
    images = images[..., 0]
    xs, ys = [], []
    order = rng.permutation(len(images))
    i = 0
    while (len(xs) < canvases) if canvases else (i < len(order)):
        count = 2 if rng.random() < TWO_DIGIT_SHARE else 1
        if i + count > len(order):
            if not canvases:
                count = len(order) - i
            else:
                order, i = rng.permutation(len(images)), 0
        x = np.zeros((CANVAS, CANVAS), np.float32)
        y = np.zeros((CANVAS, CANVAS), np.int64)
        for (r, c), k in zip(_positions(rng, count), order[i:i + count]):
            x[r:r + DIGIT, c:c + DIGIT] = images[k]
            y[r:r + DIGIT, c:c + DIGIT][images[k] > INK_THRESHOLD] = 1 + labels[k]
        i += count
        xs.append(x)
        ys.append(y)
    return np.stack(xs)[..., np.newaxis], np.stack(ys)


def load_data(split):
    """(x, y): canvases float32 (n, 24, 24, 1) with raw pixel values 0..16, masks int64 (n, 24, 24)."""
    images, labels = digits_data.load_split(split)
    return make_canvases(images, labels, CANVAS_SEEDS[split], TRAIN_CANVASES if split == "train" else None)


def _augmented(x, rng):
    gain = rng.uniform(*GAIN_RANGE, size=(len(x), 1, 1, 1))
    sigma = rng.uniform(0.0, NOISE_SIGMA, size=(len(x), 1, 1, 1))
    return np.clip(x * gain + rng.normal(size=x.shape) * sigma, 0.0, 16.0).astype(np.float32)


def build_model():
    import keras
    from keras import layers

    def conv(h, filters):
        return layers.Conv2D(filters, 3, padding="same", activation="relu")(h)

    x, y = load_data("train")
    x = _augmented(x, np.random.default_rng(METADATA["seed"]))
    inputs = keras.Input((CANVAS, CANVAS, 1), name="canvas")
    full = conv(conv(inputs, 16), 16)                                     # 24x24
    half = conv(conv(layers.MaxPooling2D()(full), 32), 32)               # 12x12
    quarter = conv(conv(layers.MaxPooling2D()(half), 64), 64)            # 6x6: sees a whole digit
    h = layers.UpSampling2D(interpolation="nearest")(quarter)
    h = conv(layers.Concatenate()([h, half]), 32)
    h = layers.UpSampling2D(interpolation="nearest")(h)
    h = conv(layers.Concatenate()([h, full]), 16)
    outputs = layers.Conv2D(CLASSES, 1, activation="softmax", name="mask")(h)
    model = keras.Model(inputs, outputs, name="digit_segmenter")
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy")
    model.fit(x / 16.0, y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    return model
