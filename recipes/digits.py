"""A small CNN for scikit-learn's digits, trained from a fixed seed.

The model takes 8x8x1 images scaled to 0..1 (models.yaml declares the
scaling, 1/16, so every platform feeds it the same way) and returns the
probabilities of the ten digits.
"""
import digits_data

EPOCHS = 40
BATCH_SIZE = 32
LEARNING_RATE = 2e-3

METADATA = {
    "dataset": digits_data.DESCRIPTION,
    "seed": 7,
    "hyperparameters": {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "optimizer": "adam"},
}


def load_data(split):
    return digits_data.load_split(split)


def build_model():
    import keras

    x, y = digits_data.load_split("train")
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(h)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x / 16.0, y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    return model
