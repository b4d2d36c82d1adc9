"""Fingerprint stage: normalized shingles and their datasketch MinHash.

Text is folded (NFKC, case-folded; punctuation is not part of any token),
cut into tokens (words; one token per character for Chinese and Japanese,
which do not separate words), and the tokens into overlapping n-grams.

A shingle is kept as a 64-bit hash, not as a string: each distinct token is
hashed once (BLAKE2b, 8 bytes, cached per process) and the n token hashes of
a shingle are combined polynomially (`shingle_hash`). The shingle set of a
text is the sorted array of its distinct shingle hashes; exact Jaccard and
containment are computed on it (two different shingles share a hash with
probability about 2^-64).

The MinHash of a whole batch of texts is computed at once with numpy: the
base hash of a shingle is its 64-bit hash folded to the scheme's width, and
datasketch's own permutations (scheme, seed, num_perm) are applied to all
shingles of the batch in one array. The result is exactly datasketch's
`MinHash(..., hashfunc=shingle_hash32)` updated with the shingle strings
(the n tokens joined by single spaces); tests check this, and the stored
signatures are LeanMinHash values usable with MinHashLSH.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHash

from dedup.models import Signature

# Han ideographs, kana and CJK compatibility ideographs: one token each.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_SCHEME_DTYPES = {"affine32": np.uint32, "affine64": np.uint64}

# the polynomial that combines the token hashes of a shingle (odd, so no
# token's bits are lost), and the name stored with the signatures
_COMBINE = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
SHINGLE_HASH_NAME = "reposts.shingle_hash/blake2b8-poly64"

# shingles per numpy block when hashing a batch: 16k x 128 permutations of
# uint32 is 8 MB, which stays in cache-friendly territory and bounds memory
_BLOCK_SHINGLES = 16384
# distinct tokens remembered per process before the cache starts over
_TOKEN_CACHE_MAX = 500_000
_token_hashes: dict[str, int] = {}


@dataclass(frozen=True)
class FingerprintConfig:
    # Word 5-grams: long enough that two unrelated stories share almost none
    # (median 0.0 on the dev corpus), short enough that a typo or a changed
    # quote mark costs a copy only a few shingles. See README "Thresholds".
    word_ngram: int = 5
    # Character n-grams for text that is mostly Chinese or Japanese.
    cjk_ngram: int = 4
    num_perm: int = 128
    seed: int = 1
    scheme: str = "affine32"

    def __post_init__(self) -> None:
        if self.word_ngram < 1 or self.cjk_ngram < 1:
            raise ValueError("shingle sizes must be at least 1")
        if self.num_perm < 16:
            raise ValueError(f"num_perm must be at least 16, got {self.num_perm}")
        if self.scheme not in _SCHEME_DTYPES:
            raise ValueError(f"scheme must be one of {', '.join(_SCHEME_DTYPES)}, got {self.scheme!r}")

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the stored hash values."""
        return np.dtype(_SCHEME_DTYPES[self.scheme])

    def params(self) -> dict[str, str]:
        """What a stored signature depends on; kept with the signatures."""
        return {
            "shingle.word_ngram": str(self.word_ngram),
            "shingle.cjk_ngram": str(self.cjk_ngram),
            "minhash.num_perm": str(self.num_perm),
            "minhash.seed": str(self.seed),
            "minhash.scheme": self.scheme,
            "minhash.hashfunc": f"{SHINGLE_HASH_NAME}{'' if self.scheme == 'affine64' else ' folded to 32 bits'}",
        }


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def _tokens_and_n(text: str, config: FingerprintConfig) -> tuple[list[str], int]:
    """The tokens, and the n of the n-grams: characters when most tokens are
    CJK characters (each is one token), words otherwise."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    toks = _TOKEN.findall(folded)
    cjk = len(_CJK_CHAR.findall(folded)) if _CJK_CHAR.search(folded) else 0
    return toks, config.cjk_ngram if cjk * 2 > len(toks) else config.word_ngram


def _token_hash(token: str) -> int:
    value = _token_hashes.get(token)
    if value is None:
        if len(_token_hashes) >= _TOKEN_CACHE_MAX:
            _token_hashes.clear()
        value = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
        _token_hashes[token] = value
    return value


def shingle_hash(shingle: bytes) -> int:
    """The 64-bit hash of one shingle given as its tokens joined by single
    spaces (the datasketch `hashfunc` for scheme affine64)."""
    value = 0
    for token in shingle.decode("utf-8").split(" "):
        value = (value * _COMBINE + _token_hash(token)) & _MASK64
    return value


def shingle_hash32(shingle: bytes) -> int:
    """`shingle_hash` folded to 32 bits (the datasketch `hashfunc` for scheme affine32)."""
    value = shingle_hash(shingle)
    return (value ^ (value >> 32)) & 0xFFFFFFFF


def shingle_strings(text: str, config: FingerprintConfig) -> list[str]:
    """The shingles of a text as strings, in order (for reading and for tests;
    the pipeline uses `shingle_hashes`)."""
    toks, n = _tokens_and_n(text, config)
    if not toks:
        return []
    if len(toks) <= n:
        return [" ".join(toks)]
    return [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def shingle_hashes(text: str, config: FingerprintConfig) -> np.ndarray:
    """The set of a text's shingles: their distinct 64-bit hashes, sorted
    (uint64). A text shorter than n tokens is one shingle."""
    toks, n = _tokens_and_n(text, config)
    if not toks:
        return np.empty(0, dtype=np.uint64)
    get = _token_hashes.get
    values = [get(t) for t in toks]
    if None in values:
        values = [_token_hash(t) for t in toks]
    token_values = np.array(values, dtype=np.uint64)
    count = max(1, len(toks) - n + 1)
    combined = token_values[:count].copy()
    multiplier = np.uint64(_COMBINE)
    for offset in range(1, min(n, len(toks))):
        combined *= multiplier
        combined += token_values[offset : offset + count]
    combined.sort()
    return combined[np.concatenate(([True], combined[1:] != combined[:-1]))]


# MurmurHash3's finalizer (shift, multiply, shift, multiply, shift), the
# bijection datasketch 2 applies to a base hash before its affine permutations
_FINALIZER_32 = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)
_FINALIZER_64 = (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)


def _murmur3_finalizer(values: np.ndarray, constants: tuple[int, int, int, int, int]) -> np.ndarray:
    dtype = values.dtype.type
    shift1, multiply1, shift2, multiply2, shift3 = (dtype(c) for c in constants)
    values = values ^ (values >> shift1)
    values *= multiply1
    values ^= values >> shift2
    values *= multiply2
    return values ^ (values >> shift3)


class MinHasher:
    """datasketch's permutations for one configuration, applied to many shingle sets at once."""

    def __init__(self, config: FingerprintConfig) -> None:
        self.config = config
        template = MinHash(num_perm=config.num_perm, seed=config.seed, scheme=config.scheme)
        a, b = template.permutations
        self._a = a.astype(config.dtype)[:, None]
        self._b = b.astype(config.dtype)[:, None]
        self._empty = template.hashvalues.copy()

    def base_values(self, shingle_set: np.ndarray) -> np.ndarray:
        """The base hash of each shingle, pre-mixed as datasketch 2's affine schemes do."""
        if self.config.scheme == "affine64":
            return _murmur3_finalizer(shingle_set.astype(np.uint64), _FINALIZER_64)
        folded = (shingle_set ^ (shingle_set >> np.uint64(32))).astype(np.uint32)
        return _murmur3_finalizer(folded, _FINALIZER_32)

    def hashvalues(self, shingle_sets: Sequence[np.ndarray]) -> np.ndarray:
        """The MinHash values of each shingle set, one row per set (num_perm columns)."""
        out = np.empty((len(shingle_sets), self.config.num_perm), dtype=self.config.dtype)
        start = 0
        while start < len(shingle_sets):
            end, total = start, 0
            while end < len(shingle_sets) and (end == start or total + len(shingle_sets[end]) <= _BLOCK_SHINGLES):
                total += len(shingle_sets[end])
                end += 1
            self._block(shingle_sets[start:end], out[start:end])
            start = end
        return out

    def _block(self, shingle_sets: Sequence[np.ndarray], out: np.ndarray) -> None:
        sizes = np.array([len(s) for s in shingle_sets])
        out[sizes == 0] = self._empty
        present = [s for s in shingle_sets if len(s)]
        if not present:
            return
        base = self.base_values(np.concatenate(present))
        permuted = self._a * base[None, :]  # wraps modulo 2^width, as datasketch's does
        permuted += self._b
        starts = np.concatenate(([0], np.cumsum([len(s) for s in present])[:-1]))
        out[sizes > 0] = np.minimum.reduceat(permuted, starts, axis=1).T


_minhashers: dict[FingerprintConfig, MinHasher] = {}


def minhasher(config: FingerprintConfig) -> MinHasher:
    if config not in _minhashers:
        _minhashers[config] = MinHasher(config)
    return _minhashers[config]


def fingerprints(texts: Sequence[str], config: FingerprintConfig) -> list[Signature]:
    """The signatures of many texts, hashed together."""
    shingle_sets = [shingle_hashes(text, config) for text in texts]
    values = minhasher(config).hashvalues(shingle_sets)
    return [Signature(shingles=s, hashvalues=v.tobytes()) for s, v in zip(shingle_sets, values, strict=True)]


def fingerprint(text: str, config: FingerprintConfig) -> Signature:
    return fingerprints([text], config)[0]


def datasketch_minhash(shingles: Sequence[str], config: FingerprintConfig) -> MinHash:
    """datasketch's own MinHash of shingle strings with the same hash function:
    the reference `fingerprints` must equal."""
    minhash = MinHash(
        num_perm=config.num_perm,
        seed=config.seed,
        scheme=config.scheme,
        hashfunc=shingle_hash if config.scheme == "affine64" else shingle_hash32,
    )
    minhash.update_batch([s.encode("utf-8") for s in shingles])
    return minhash


def lean_minhash(hashvalues: bytes | np.ndarray, config: FingerprintConfig) -> LeanMinHash:
    """Rebuild a stored signature; the scheme must be the one it was made with."""
    values = np.frombuffer(hashvalues, dtype=config.dtype) if isinstance(hashvalues, bytes) else hashvalues
    if len(values) != config.num_perm:
        raise ValueError(
            f"stored signature has {len(values)} hash values, the settings say num_perm={config.num_perm}: "
            "the database was fingerprinted with other settings"
        )
    return LeanMinHash(seed=config.seed, hashvalues=values, scheme=config.scheme)
