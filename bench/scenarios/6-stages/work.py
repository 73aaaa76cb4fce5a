"""CPU work on one core: ROUNDS chained sha256 of a seed; prints the result.

    python3 work.py SEED ROUNDS
"""

import hashlib
import sys

h = sys.argv[1].encode()
for _ in range(int(sys.argv[2])):
    h = hashlib.sha256(h).digest()
print(h.hex())
