"""Writes N small source-like files (0-2 KiB, 1 KiB on average) in folders of 500.

    python3 gen.py DEST N [SEED]
"""

import os
import random
import sys


def main():
    dest, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 5)
    words = [f"w{rng.randrange(5000)}" for _ in range(20000)]
    pool = (" ".join(words) + "\n").encode() * 4
    for i in range(count):
        if i % 500 == 0:
            folder = os.path.join(dest, f"pkg{i // 500:04d}")
            os.makedirs(folder)
        size = rng.randrange(0, 2048)
        off = rng.randrange(0, len(pool) - size)
        with open(os.path.join(folder, f"m{i}.js"), "wb") as f:
            f.write(pool[off:off + size])


if __name__ == "__main__":
    main()
