"""Example atomic helper: read one byte of a file and discard it (shadowtest init)."""

import sys

with open(sys.argv[1], "rb") as f:
    got = len(f.read(1))
print(f"read {got} byte of {sys.argv[1]}")
