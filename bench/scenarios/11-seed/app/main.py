"""Export a small Keras model to ONNX and score it with onnxruntime: the
application layer of the seed-sized benchmark image (scenario 11)."""

import sys

from export import export_model, score

# bench/run rewrites the next line for scenario 11c (a one-line change).
BUILD_STAMP = "original"


def main(argv):
    path = argv[1] if len(argv) > 1 else "/tmp/model.onnx"
    export_model(path)
    print(score(path), BUILD_STAMP)


if __name__ == "__main__":
    main(sys.argv)
