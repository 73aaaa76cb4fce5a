"""A tiny Keras model through tf2onnx, then onnxruntime."""

import numpy as np


def build_model():
    import tensorflow as tf

    inputs = tf.keras.Input(shape=(8,), name="x")
    hidden = tf.keras.layers.Dense(16, activation="relu")(inputs)
    outputs = tf.keras.layers.Dense(1)(hidden)
    return tf.keras.Model(inputs, outputs)


def export_model(path):
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, 8), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(build_model(), input_signature=spec, output_path=path)


def score(path):
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    batch = np.ones((4, 8), dtype=np.float32)
    return session.run(None, {"x": batch})[0].ravel().tolist()
