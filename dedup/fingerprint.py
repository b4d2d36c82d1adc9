"""Fingerprint stage: normalized shingles and their datasketch MinHash.

Text is folded (NFKC, case-folded; punctuation is not part of any token),
cut into tokens (words; one token per character for Chinese and Japanese,
which do not separate words), and the tokens into overlapping n-grams.

A shingle is kept as a 64-bit hash, not as a string. The text is tokenized
and hashed in numpy, without a Python step per token: a token's hash is a
polynomial over its code points, finished with MurmurHash3's 64-bit mixer,
and the n token hashes of a shingle are combined polynomially
(`shingle_hash` is the same function on one shingle string). The shingle set
of a text is the sorted array of its distinct shingle hashes; exact Jaccard
and containment are computed on it (two different shingles share a hash with
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

# the polynomials that hash a token's code points and combine the token hashes
# of a shingle (odd multipliers, so no bits are lost), and the name stored
# with the signatures
_CHAR_BASE = 0x100000001B3
_CHAR_OFFSET = 0x9E3779B97F4A7C15
_COMBINE = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
SHINGLE_HASH_NAME = "reposts.shingle_hash/codepoint-poly64-fmix"

# code points tokenized together by `shingle_sets` (a few news articles): the
# arrays of one step stay in the CPU's cache (a whole batch of 200 articles
# at once is half as fast per article)
_GROUP_CODE_POINTS = 32768

# shingles per numpy block when hashing a batch: 16k x 128 permutations of
# uint32 is 8 MB, which stays in cache-friendly territory and bounds memory
_BLOCK_SHINGLES = 16384

# every code point's kind: 0 not in a token, 1 word character (str.isalnum,
# as regex [^\W_]), 2 CJK character (a token by itself); built on first use
_WORD, _CJK_KIND = 1, 2
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_char_kinds: np.ndarray | None = None
_char_powers = np.ones(1, dtype=np.uint64)


def _kinds() -> np.ndarray:
    global _char_kinds
    if _char_kinds is None:
        kinds = np.fromiter((chr(c).isalnum() for c in range(0x110000)), dtype=bool, count=0x110000).astype(np.uint8)
        for low, high in _CJK_RANGES:
            kinds[low : high + 1] = _CJK_KIND
        _char_kinds = kinds
    return _char_kinds


def _powers(n: int) -> np.ndarray:
    """_CHAR_BASE ** k mod 2^64 for k < n."""
    global _char_powers
    if len(_char_powers) < n:
        size = max(n, 2 * len(_char_powers), 256)
        powers = np.full(size, _CHAR_BASE, dtype=np.uint64)
        powers[0] = 1
        _char_powers = np.cumprod(powers, dtype=np.uint64)  # wraps modulo 2^64
    return _char_powers


@dataclass(frozen=True)
class FingerprintConfig:
    # Word 5-grams: long enough that two unrelated stories share almost none
    # (median 0.0 on the dev corpus), short enough that a typo or a changed
    # quote mark costs a copy only a few shingles. See README "How it decides".
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


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def tokens(text: str) -> list[str]:
    """The tokens as strings (for reading and for tests; `shingle_hashes` finds
    the same tokens in numpy)."""
    return _TOKEN.findall(_folded(text))


def shingle_strings(text: str, config: FingerprintConfig) -> list[str]:
    """The shingles of a text as strings, in order: the n tokens joined by single spaces."""
    toks = tokens(text)
    if not toks:
        return []
    cjk = sum(1 for t in toks if _CJK_CHAR.match(t))
    n = config.cjk_ngram if cjk * 2 > len(toks) else config.word_ngram
    if len(toks) <= n:
        return [" ".join(toks)]
    return [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def _token_hashes(code_points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each token of an array of code points, in order: its hash, where it
    starts, and whether it is a CJK character."""
    kinds = _kinds()[code_points]
    word = kinds == _WORD
    cjk = kinds == _CJK_KIND
    in_token = np.flatnonzero(word | cjk)
    if not len(in_token):
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64), np.empty(0, dtype=bool)
    starts = cjk.copy()
    starts[0] |= word[0]
    starts[1:] |= word[1:] & ~word[:-1]
    first = starts[in_token]
    token_starts = in_token[first]
    position = in_token - token_starts[np.cumsum(first) - 1]
    terms = code_points[in_token].astype(np.uint64) + np.uint64(_CHAR_OFFSET)
    terms *= _powers(int(position.max()) + 1)[position]
    sums = np.add.reduceat(terms, np.flatnonzero(first))
    return _murmur3_finalizer(sums, _FINALIZER_64), token_starts, cjk[token_starts]


def _token_hash(token: str) -> int:
    """One token's hash, as `_token_hashes` computes it for each token in numpy."""
    value, power = 0, 1
    for char in token:
        value = (value + (ord(char) + _CHAR_OFFSET) * power) & _MASK64
        power = (power * _CHAR_BASE) & _MASK64
    return int(_murmur3_finalizer(np.array([value], dtype=np.uint64), _FINALIZER_64)[0])


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


def shingle_hashes(text: str, config: FingerprintConfig) -> np.ndarray:
    """The set of a text's shingles: their distinct 64-bit hashes, sorted
    (uint64). A text shorter than n tokens is one shingle."""
    return shingle_sets([text], config)[0]


def shingle_sets(texts: Sequence[str], config: FingerprintConfig) -> list[np.ndarray]:
    """`shingle_hashes` of many texts, tokenized and hashed a few texts at a
    time (about _GROUP_CODE_POINTS together): one numpy call per step for the
    group, on arrays that stay in cache."""
    folded = [_folded(text) for text in texts]
    sets: list[np.ndarray] = []
    start = 0
    while start < len(folded):
        end, size = start + 1, len(folded[start])
        while end < len(folded) and size + len(folded[end]) <= _GROUP_CODE_POINTS:
            size += len(folded[end])
            end += 1
        sets.extend(_shingle_group(folded[start:end], config))
        start = end
    return sets


def _shingle_group(folded: list[str], config: FingerprintConfig) -> list[np.ndarray]:
    # one array of code points, the texts apart by a newline (in no token)
    code_points = np.frombuffer("\n".join(folded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    text_starts = np.cumsum([0] + [len(f) + 1 for f in folded[:-1]])
    token_values, token_starts, token_cjk = _token_hashes(code_points)
    # each text's tokens: token_values[low[i]:high[i]]
    low = np.searchsorted(token_starts, text_starts)
    high = np.append(low[1:], len(token_values))
    n_tokens = high - low
    cjk_before = np.concatenate(([0], np.cumsum(token_cjk)))
    n_cjk = cjk_before[high] - cjk_before[low]
    ngram = np.where(n_cjk * 2 > n_tokens, config.cjk_ngram, config.word_ngram)
    # the hash of every run of n tokens, for each n in use (runs that cross
    # from one text into the next are never read)
    windows = {int(n): _windows(token_values, int(n)) for n in np.unique(ngram[n_tokens >= ngram])}
    sets = []
    for start, count, n in zip(low.tolist(), n_tokens.tolist(), ngram.tolist(), strict=True):
        if not count:
            sets.append(np.empty(0, dtype=np.uint64))
            continue
        if count >= n:
            combined = np.sort(windows[n][start : start + count - n + 1])
        else:  # a text shorter than n tokens is one shingle of all of them
            combined = _windows(token_values[start : start + count], count)
        sets.append(combined[np.concatenate(([True], combined[1:] != combined[:-1]))])
    return sets


def _windows(token_values: np.ndarray, n: int) -> np.ndarray:
    """The hash of each run of n consecutive tokens (the token hashes
    combined polynomially: h = h * _COMBINE + next)."""
    count = len(token_values) - n + 1
    combined = token_values[:count].copy()
    multiplier = np.uint64(_COMBINE)
    for offset in range(1, n):
        combined *= multiplier
        combined += token_values[offset : offset + count]
    return combined


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


def mix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer of uint32 values: a bijection that spreads them evenly."""
    return _murmur3_finalizer(values, _FINALIZER_32)


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
        return mix32(folded)

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
    sets = shingle_sets(texts, config)
    values = minhasher(config).hashvalues(sets)
    return [Signature(shingles=s, hashvalues=v.tobytes()) for s, v in zip(sets, values, strict=True)]


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
