"""A starter recipe: a small dense network for scikit-learn's digits.

modelmake calls ``build_model()`` for the model and ``load_data(split)`` for
the data sets named in models.yaml; METADATA travels into the bundle manifest.
"""
import numpy as np

SEED = 3
EPOCHS = 30
METADATA = {
    "dataset": "scikit-learn digits (8x8 images flattened to 64 values, 0..16)",
    "seed": SEED,
    "hyperparameters": {"epochs": EPOCHS, "hidden_units": 64},
}


def load_data(split):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    splits = {"train": (train_x, train_y), "calibration": (train_x[:200], train_y[:200]), "test": (test_x, test_y)}
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; this recipe provides {', '.join(splits)}")
    features, labels = splits[split]
    return features.astype(np.float32), labels.astype(np.int64)


def build_model():
    import keras

    x, y = load_data("train")
    model = keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x / 16.0, y, epochs=EPOCHS, batch_size=32, verbose=0)
    return model
