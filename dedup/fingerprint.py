"""Fingerprint stage: normalized shingles and their datasketch MinHash.

Text is folded (NFKC, case-folded, quotes straightened, punctuation dropped),
cut into tokens (words; one token per character for Chinese and Japanese,
which do not separate words), and the tokens into overlapping n-grams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHash

from dedup.clean import fold
from dedup.models import Signature

# Han ideographs, kana and CJK compatibility ideographs: one token each.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_SCHEME_DTYPES = {"affine32": np.uint32, "affine64": np.uint64, "legacy": np.uint64}


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
            "minhash.hashfunc": "datasketch.sha1_hash32" if self.scheme != "affine64" else "datasketch.sha1_hash64",
        }


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(fold(text))


def shingles(text: str, config: FingerprintConfig) -> frozenset[str]:
    """The set of token n-grams of a text; a text shorter than n is one shingle."""
    toks = tokens(text)
    if not toks:
        return frozenset()
    cjk = sum(1 for t in toks if _CJK_CHAR.fullmatch(t))
    n = config.cjk_ngram if cjk * 2 > len(toks) else config.word_ngram
    if len(toks) <= n:
        return frozenset([" ".join(toks)])
    return frozenset(" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1))


def minhash_of(shingle_set: frozenset[str], config: FingerprintConfig) -> MinHash:
    minhash = MinHash(num_perm=config.num_perm, seed=config.seed, scheme=config.scheme)
    minhash.update_batch([s.encode("utf-8") for s in shingle_set])
    return minhash


def fingerprint(text: str, config: FingerprintConfig) -> Signature:
    shingle_set = shingles(text, config)
    minhash = minhash_of(shingle_set, config)
    return Signature(shingles=shingle_set, hashvalues=minhash.hashvalues.tobytes())


def lean_minhash(hashvalues: bytes, config: FingerprintConfig) -> LeanMinHash:
    """Rebuild a stored signature; the scheme must be the one it was made with."""
    values = np.frombuffer(hashvalues, dtype=config.dtype)
    if len(values) != config.num_perm:
        raise ValueError(
            f"stored signature has {len(values)} hash values, the settings say num_perm={config.num_perm}: "
            "the database was fingerprinted with other settings"
        )
    return LeanMinHash(seed=config.seed, hashvalues=values, scheme=config.scheme)
