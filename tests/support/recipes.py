"""The recipes of the test workspaces: small Keras models trained from fixed seeds on scikit-learn's digits."""
from __future__ import annotations

DIGITS_RECIPE = '''\
"""A small dense network for scikit-learn's 8x8 digits, trained from a fixed seed."""
import numpy as np

SEED = 11
EPOCHS = 8
METADATA = {"dataset": "scikit-learn digits", "seed": SEED, "hyperparameters": {"epochs": EPOCHS, "hidden_units": 32}}


def load_data(split):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8).astype(np.float32)
    y = y.astype(np.int64)
    splits = {"train": slice(0, 1200), "calibration": slice(1200, 1300), "test": slice(1300, None)}
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; this recipe provides {', '.join(splits)}")
    return x[splits[split]], y[splits[split]]


def build_model():
    import keras

    x, y = load_data("train")
    model = keras.Sequential([
        keras.Input((8, 8), name="image"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x / 16.0, y, epochs=EPOCHS, batch_size=32, verbose=0)
    return model
'''


def flat_digits_recipe(description: str, *, seed: int, hidden_units: tuple[int, ...] = (), epochs: int, batch_size: int) -> str:
    """A recipe for the digits flattened to 64 values (the first 1300 to train, the rest to test): optional ReLU
    layers of ``hidden_units``, then a softmax over the ten classes."""
    hidden = "".join(f'        keras.layers.Dense({units}, activation="relu"),\n' for units in hidden_units)
    return f'''\
"""{description}"""
import numpy as np

METADATA = {{"dataset": "scikit-learn digits", "seed": {seed}}}


def load_data(split):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x.astype(np.float32), y.astype(np.int64)
    return (x[:1300], y[:1300]) if split == "train" else (x[1300:], y[1300:])


def build_model():
    import keras

    x, y = load_data("train")
    model = keras.Sequential([
        keras.Input((64,), name="pixels"),
{hidden}        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x / 16.0, y, epochs={epochs}, batch_size={batch_size}, verbose=0)
    return model
'''


GLYPHS_RECIPE = flat_digits_recipe(
    "A second model: a linear classifier for the digits flattened to 64 values.", seed=5, epochs=5, batch_size=32
)

WIDE_RECIPE = flat_digits_recipe(
    "One wide hidden layer: a TFLite file of about 3.5 MiB, four 1 MiB encryption segments.",
    seed=3, hidden_units=(12288,), epochs=1, batch_size=64,
)
