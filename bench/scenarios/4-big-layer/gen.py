"""Writes a torch-sized tree of partly compressible files, the same bytes every time.

    python3 gen.py DEST MIB [SEED]

The shape follows an installed PyTorch wheel: a few shared libraries make up
most of the bytes, and a long tail of Python sources, headers and small
data files makes up most of the names. Each file is a sequence of chunks,
drawn either from a pool of random bytes (machine code and weights compress
badly) or from a pool of source-like text (compresses about 4:1), so the
whole gzips to a bit over half its size, as torch's layer does. The pools
are larger than any compressor's window, so reused chunks do not compress
better than fresh ones would.

bench/run runs it in scenario 4's RUN step, and again on the host to
measure the floor (tar | pigz and sha256sum of the same bytes).
"""

import os
import random
import sys

POOL = 64 << 20
TEXT_POOL = 8 << 20
WORDS = (
    "def return self import from tensor torch cuda float int if else for in "
    "while class None True False kernel grad backward forward module param "
    "const void struct template typename namespace auto size_t std vector "
    "#include <ATen/Tensor.h> assert dim shape stride dtype device"
).split()


def text_pool(rng, size):
    out = bytearray()
    line = []
    while len(out) < size:
        line.clear()
        indent = " " * (4 * rng.randrange(4))
        for _ in range(rng.randrange(3, 12)):
            w = rng.choice(WORDS)
            line.append(w if rng.random() < 0.8 else f"{w}_{rng.randrange(1000)}")
        out += (indent + " ".join(line) + "\n").encode()
    return bytes(out[:size])


def layout(rng, total):
    """(relative path, size) pairs summing to `total`, torch-like."""
    files = []
    big = [("lib/libtorch_cuda.so", 0.38), ("lib/libtorch_cpu.so", 0.24),
           ("lib/libnccl.so.2", 0.08), ("lib/libcudnn_ops.so.9", 0.06),
           ("lib/libc10.so", 0.02)]
    for name, share in big:
        files.append((name, int(total * share)))
    rest = total - sum(s for _, s in files)
    n = 0
    while rest > 0:
        kind = rng.random()
        if kind < 0.55:
            size, name = rng.randrange(200, 40_000), f"torch/mod{n // 50}/part{n}.py"
        elif kind < 0.9:
            size, name = rng.randrange(500, 20_000), f"include/ATen/ops/op{n}.h"
        else:
            size, name = rng.randrange(20_000, 2_000_000), f"share/data/blob{n}.bin"
        size = min(size, rest)
        files.append((name, size))
        rest -= size
        n += 1
    return files


def write_file(path, size, rng, rand, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    binary = path.endswith((".so", ".bin")) or ".so." in path
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, rng.randrange(16 << 10, 512 << 10))
            # Libraries and data: 35% random chunks; sources: 5%.
            pool = rand if rng.random() < (0.35 if binary else 0.05) else text
            off = rng.randrange(0, len(pool) - n)
            f.write(pool[off:off + n])
            left -= n


def main():
    dest, mib = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    rand = rng.randbytes(POOL)
    text = text_pool(rng, TEXT_POOL)
    for rel, size in layout(rng, mib << 20):
        write_file(os.path.join(dest, rel), size, rng, rand, text)


if __name__ == "__main__":
    main()
