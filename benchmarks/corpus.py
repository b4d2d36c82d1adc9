"""A synthetic news corpus for benchmarks: random stories and planted reposts.

    python benchmarks/corpus.py --docs 100000 [--seed 7] [--out FILE.parquet]

Words are invented (random syllables, Zipf-distributed like a real
vocabulary); a story is 4 to 10 paragraphs of 25 to 70 words. About a third
of the documents are reposts of an earlier story, made as aggregators make
them: verbatim, cut to the first half, an excerpt of two paragraphs, a
paragraph dropped, or 3% of the words changed; one repost in ten copies
another repost. Reposts sit on 40 aggregator hosts, stories on 2000
publisher hosts. Text only: the benchmarks start after extraction.

Columns: doc (int), url, host, story (the true story id), mode, text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CACHE = Path(__file__).parent / ".cache"
VOCABULARY = 40_000
SYLLABLES = [
    "ka",
    "ro",
    "mi",
    "ten",
    "sul",
    "bar",
    "lo",
    "ve",
    "nis",
    "dor",
    "qua",
    "pe",
    "tri",
    "zan",
    "ul",
    "gor",
    "sha",
    "fen",
]
MODES = ["verbatim", "cut", "excerpt", "drop-one", "edited"]
MODE_SHARE = [0.4, 0.2, 0.1, 0.1, 0.2]
REPOST_SHARE = 0.33
CHAIN_SHARE = 0.1
CHUNK = 10_000


def vocabulary(rng: np.random.Generator) -> np.ndarray:
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        n = int(rng.integers(1, 5))
        words["".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), n))] = None
    return np.array(list(words), dtype=object)


class StoryWriter:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.words = vocabulary(rng)
        ranks = np.arange(1, VOCABULARY + 1)
        weights = 1.0 / ranks**1.05
        self.cdf = np.cumsum(weights / weights.sum())

    def paragraph(self) -> str:
        ids = np.searchsorted(self.cdf, self.rng.random(int(self.rng.integers(25, 71))))
        ids = np.minimum(ids, VOCABULARY - 1)
        sentence = " ".join(self.words[ids])
        return sentence[0].upper() + sentence[1:] + "."

    def story(self) -> list[str]:
        return [self.paragraph() for _ in range(int(self.rng.integers(4, 11)))]

    def repost(self, paragraphs: list[str], mode: str) -> list[str]:
        if mode == "cut":
            return paragraphs[: max(2, len(paragraphs) // 2)]
        if mode == "excerpt":
            return paragraphs[:2]
        if mode == "drop-one":
            drop = int(self.rng.integers(0, len(paragraphs)))
            return paragraphs[:drop] + paragraphs[drop + 1 :]
        if mode == "edited":
            edited = []
            for paragraph in paragraphs:
                words = paragraph.split(" ")
                for position in np.flatnonzero(self.rng.random(len(words)) < 0.03):
                    words[position] = str(self.words[int(self.rng.integers(0, VOCABULARY))])
                edited.append(" ".join(words))
            return edited
        return list(paragraphs)


def documents(n_docs: int, seed: int = 7) -> Iterator[dict]:
    """The corpus, one document at a time, always the same for the same seed."""
    rng = np.random.default_rng(seed)
    writer = StoryWriter(rng)
    published: list[tuple[int, list[str]]] = []  # (story, paragraphs) of every document so far, for reposts
    for doc in range(n_docs):
        if published and rng.random() < REPOST_SHARE:
            mode = MODES[int(rng.choice(len(MODES), p=MODE_SHARE))]
            # a repost of a repost now and then, else of a story's first page
            story, paragraphs = published[int(rng.integers(0, len(published)))]
            paragraphs = writer.repost(paragraphs, mode)
            host = f"agg{int(rng.integers(0, 40))}.example"
            if rng.random() < CHAIN_SHARE:
                published.append((story, paragraphs))
        else:
            mode, story, paragraphs = "original", doc, writer.story()
            host = f"news{int(rng.integers(0, 2000))}.example"
            published.append((story, paragraphs))
        # the pool of copy sources stays bounded (recent stories get copied)
        if len(published) > 50_000:
            del published[:10_000]
        yield {
            "doc": doc,
            "url": f"https://{host}/{doc}.html",
            "host": host,
            "story": story,
            "mode": mode,
            "text": "\n".join(paragraphs),
        }


def corpus_file(n_docs: int, seed: int = 7) -> Path:
    """The corpus as a Parquet file under benchmarks/.cache (written once)."""
    path = CACHE / f"corpus-{n_docs}-{seed}.parquet"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        write(path, n_docs, seed)
    return path


def write(path: Path, n_docs: int, seed: int) -> None:
    partial = path.with_suffix(".partial")
    writer = None
    rows: list[dict] = []
    for row in documents(n_docs, seed):
        rows.append(row)
        if len(rows) == CHUNK:
            table = pa.Table.from_pylist(rows)
            writer = writer or pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            rows = []
    if rows:
        table = pa.Table.from_pylist(rows)
        writer = writer or pq.ParquetWriter(partial, table.schema)
        writer.write_table(table)
    if writer:
        writer.close()
    partial.rename(path)


def read_chunks(path: Path, rows: int = CHUNK) -> Iterator[list[dict]]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        yield batch.to_pylist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.out:
        write(args.out, args.docs, args.seed)
        print(args.out)
    else:
        print(corpus_file(args.docs, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
