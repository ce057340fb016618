"""The fuzz corpus, replayed deterministically: the fuzzing gate CI runs.

Every committed input in tests/security/fuzz/corpus/ goes through the fuzz
targets, then a fixed-seed, fixed-count pass of mutations of them (bit
flips, inserted attack tokens, splices), so the gate is the same on every
run. Exploratory atheris runs (see fuzz_edge.py) happen outside CI; what they
find is added to the corpus.
"""

from __future__ import annotations

import random
from pathlib import Path

from .fuzz import fuzz_edge

CORPUS = Path(__file__).parent / "fuzz" / "corpus"
SEED = 20261128
MUTATIONS = 4000
# Bytes that attacks are made of, inserted by the mutator.
TOKENS = (
    b"%2e",
    b"%2f",
    b"%5c",
    b"%25",
    b"..",
    b"//",
    b"\\",
    b";",
    b"\x00",
    b"%00",
    b"%c0%af",
    b"=",
    b'"',
    b",",
    b".",
    b"\n",
    b"\x00cookie: session=",
    b"\x00host: pages.test",
    b"\x00authorization: Bearer ",
    b"eyJhbGciOiJub25lIn0",
    b"#",
    b"?",
    b"\xff",
)


def corpus() -> list[bytes]:
    """The committed inputs, in a fixed order."""
    return [path.read_bytes() for path in sorted(CORPUS.iterdir()) if path.is_file()]


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    """One mutation of ``data`` (its first byte, the target, mostly kept)."""
    body = bytearray(data)
    choice = rng.randrange(7)
    position = rng.randrange(len(body) + 1)
    if choice == 0 and body:
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    elif choice == 1:
        body[position:position] = rng.choice(TOKENS)
    elif choice == 2 and len(body) > 1:
        end = rng.randrange(position, len(body) + 1)
        del body[max(position, 1) : end]
    elif choice == 3 and body:
        start = rng.randrange(len(body))
        body[position:position] = body[start : start + rng.randrange(1, 16)]
    elif choice == 4:
        body = body[:position] + bytearray(other[rng.randrange(len(other) + 1) :])
    elif choice == 5 and body:
        body[0] = rng.randrange(256)  # another target, the same input
    else:
        body[position:position] = bytes([rng.randrange(256)])
    return bytes(body)


def test_corpus_covers_every_target() -> None:
    """The committed corpus holds inputs for every fuzz target."""
    inputs = corpus()
    assert len(inputs) >= 100
    targets = {data[0] % len(fuzz_edge.TARGETS) for data in inputs if data}
    assert targets == set(range(len(fuzz_edge.TARGETS)))


def test_every_corpus_input_keeps_the_properties() -> None:
    """Every committed input runs through its target with every property kept."""
    failures = []
    for path in sorted(CORPUS.iterdir()):
        try:
            fuzz_edge.run(path.read_bytes())
        except Exception as exc:
            failures.append((path.name, repr(exc)[:300]))
    assert failures == []


def test_fixed_seed_mutations_keep_the_properties() -> None:
    """A fixed-seed, fixed-count mutation pass over the corpus keeps every property."""
    rng = random.Random(SEED)
    inputs = corpus()
    failures = []
    for _ in range(MUTATIONS):
        data = mutate(rng, rng.choice(inputs), rng.choice(inputs))
        try:
            fuzz_edge.run(data)
        except Exception as exc:
            failures.append((data[:200], repr(exc)[:300]))
    assert failures == []
