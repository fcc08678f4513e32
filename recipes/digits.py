"""A small CNN for scikit-learn's digits, trained from a fixed seed with tf-keras (legacy Keras 2).

The model takes 8x8x1 images scaled to 0..1 (models.yaml declares the
scaling, 1/16, so every platform feeds it the same way) and returns the
probabilities of the ten digits.  It is built with tf-keras (models.yaml:
``framework: tf-keras``) so that its variants can fine-tune it with
tensorflow-model-optimization: ``fine_tune`` trains the model modelmake hands
it, wrapped for quantization-aware training or for pruning.
"""
import digits_data

EPOCHS = 40
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
# Fine-tuning defaults, for variants whose training names no epochs or learning rate.
FINE_TUNE_EPOCHS = 3
FINE_TUNE_LEARNING_RATE = 1e-4

METADATA = {
    "dataset": digits_data.DESCRIPTION,
    "seed": 7,
    "hyperparameters": {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "optimizer": "adam"},
}


def load_data(split):
    return digits_data.load_split(split)


def build_model():
    import tf_keras as keras

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


def fine_tune(model, training):
    """Fit the model modelmake wrapped (quantization-aware, or pruned as it trains) on the training split."""
    import tf_keras as keras

    x, y = digits_data.load_split("train")
    model.compile(
        optimizer=keras.optimizers.Adam(training.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x / 16.0, y, epochs=training.epochs, batch_size=BATCH_SIZE, callbacks=training.callbacks, verbose=0)
    return model
