"""A small scoring service: the application layer of the ML benchmark image."""

import json
import sys

from features import load_frame
from model import train, score

# bench/run rewrites the next line for scenario 3 (a one-line change).
BUILD_STAMP = "original"


def main(argv):
    frame = load_frame(rows=int(argv[1]) if len(argv) > 1 else 1000)
    model = train(frame)
    print(json.dumps({"stamp": BUILD_STAMP, "score": score(model, frame)}))


if __name__ == "__main__":
    main(sys.argv)
