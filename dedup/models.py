"""The values the stages hand to each other.

Each stage takes and returns these small dataclasses, never dicts, so a
stage can be tested on its own and its contract is readable here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

# a row of the host_lines table: host, line_key, text, story_doc_ids
HostLineRow = tuple[str, int, str, list[int]]


@dataclass(frozen=True)
class FetchedPage:
    """One fetch attempt or archive record, successful or not.

    `html` is the raw body (bytes, undecoded) when the attempt produced one;
    `error` is a one-line reason when it did not. `n_bytes` is the body's
    size, kept when the body is dropped (`without_body`).
    """

    url: str
    source: str  # "http" for a live fetch, "warc:<file name>" for an archive record
    fetched_at: datetime
    final_url: str | None = None
    status: int | None = None
    content_type: str | None = None
    html: bytes | None = None
    error: str | None = None
    elapsed_ms: int = 0
    n_bytes: int | None = None  # len(html) when not given

    def __post_init__(self) -> None:
        if self.n_bytes is None:
            object.__setattr__(self, "n_bytes", len(self.html) if self.html is not None else 0)

    @property
    def ok(self) -> bool:
        return self.error is None and self.html is not None

    def without_body(self) -> FetchedPage:
        """The attempt as it is recorded once its page is extracted: the body
        is not carried further (from the workers back to the linker), its size
        is. (`ok` is then False: there is no body left to extract.)"""
        return replace(self, html=None, n_bytes=self.n_bytes)


@dataclass(frozen=True)
class Article:
    """What extraction found in a page: the text and its metadata."""

    url: str
    final_url: str
    host: str
    fetched_at: datetime
    text: str
    title: str | None = None
    author: str | None = None
    site_name: str | None = None
    published_at: datetime | None = None
    lang: str | None = None
    canonical_url: str | None = None
    og_url: str | None = None
    # <meta name="original-source"> or schema.org isBasedOn: a page naming its source itself
    declared_source_url: str | None = None
    source: str = ""  # how it was read: "http" or "warc:<file name>"


@dataclass(frozen=True)
class Marker:
    """A span that cleaning removed from the text, and the rule that removed it."""

    kind: str  # disclaimer, credit, dateline, boilerplate
    rule: str
    text: str
    position: int  # index of the paragraph (line) in the extracted text
    # True when the marker says the page is a copy (a repost disclaimer, a
    # credit); False for markers any page may carry (a risk footer, a dateline).
    marks_copy: bool = False
    source_name: str | None = None
    source_url: str | None = None
    # a paragraph that names its source and stays in the body (a wire
    # dateline or byline): an attribution, not a marker
    kept: bool = False


@dataclass(frozen=True)
class Attribution:
    """Evidence that names where a page came from."""

    kind: str  # canonical, og_url, declared, credit, wire, disclaimer
    strength: str  # strong, medium, weak
    source_name: str | None = None
    source_url: str | None = None


@dataclass(frozen=True)
class CleanedArticle:
    article: Article
    body: str  # the text minus the markers: what gets fingerprinted
    markers: tuple[Marker, ...] = ()
    attributions: tuple[Attribution, ...] = ()

    @property
    def marks_copy(self) -> bool:
        return any(m.marks_copy for m in self.markers)


@dataclass(frozen=True)
class Signature:
    """A body's shingle set and its MinHash values."""

    shingles: np.ndarray  # the distinct 64-bit shingle hashes, sorted (uint64)
    hashvalues: bytes  # the MinHash hash values, in the scheme's dtype, as bytes

    @property
    def n_shingles(self) -> int:
        return len(self.shingles)


@dataclass(frozen=True)
class Similarity:
    """Exact similarity of two shingle sets, both directions of containment."""

    jaccard: float
    a_in_b: float  # share of a's shingles that are in b
    b_in_a: float

    def flipped(self) -> Similarity:
        """The same pair seen from b."""
        return Similarity(self.jaccard, self.b_in_a, self.a_in_b)


@dataclass
class Page:
    """A document on its way through link and provenance: a cleaned article
    with its signature and its id in the store."""

    doc_id: int
    cleaned: CleanedArticle
    signature: Signature
    cluster_id: int | None = None
    first_seen_run: int | None = None
    # the page carries a line (a marker other than a dateline) that none of
    # the pages of other sites it is linked to carries: an aggregator's copy
    adds_lines: bool = False
    # the page holds several stories (a digest): see provenance.find_hubs
    hub: bool = False

    @property
    def article(self) -> Article:
        return self.cleaned.article


@dataclass
class Member:
    """What provenance needs to know about one page."""

    doc_id: int
    url: str
    host: str
    n_shingles: int
    marks_copy: bool
    published_at: datetime | None = None
    first_seen_run: int = 0
    copy_marker_texts: tuple[str, ...] = ()
    credit_texts: tuple[str, ...] = ()  # those of the copy markers that are credits
    attributions: tuple[Attribution, ...] = ()
    cluster_id: int | None = None
    site_name: str | None = None
    # carries lines that its host adds to other sites' stories (Page.adds_lines)
    adds_lines: bool = False
    # holds several stories (find_hubs)
    hub: bool = False

    @classmethod
    def with_markers(cls, copy_markers: Iterable[tuple[str, str]], **fields: object) -> Member:
        """A member whose copy markers are given as (text, kind) in page order;
        its credits are those of kind "credit"."""
        copy_markers = list(copy_markers)
        return cls(
            copy_marker_texts=tuple(text for text, _ in copy_markers),
            credit_texts=tuple(text for text, kind in copy_markers if kind == "credit"),
            **fields,
        )

    @classmethod
    def of_page(cls, page: Page) -> Member:
        """A page in hand, as cleaning left it."""
        cleaned, article = page.cleaned, page.cleaned.article
        return cls.with_markers(
            ((m.text, m.kind) for m in cleaned.markers if m.marks_copy),
            doc_id=page.doc_id,
            url=article.url,
            host=article.host,
            n_shingles=page.signature.n_shingles,
            marks_copy=cleaned.marks_copy,
            published_at=article.published_at,
            first_seen_run=page.first_seen_run or 0,
            attributions=cleaned.attributions,
            site_name=article.site_name,
        )


@dataclass(frozen=True)
class StoredPage:
    """What cleaning a stored page again needs of it."""

    doc_id: int
    host: str
    title: str | None
    text: str
    body: str
    adds_lines: bool


@dataclass
class CleanedAgain:
    """A stored page cleaned of lines learned after it was stored: its new
    body and signature, and the markers for the lines taken out."""

    doc_id: int
    body: str
    signature: Signature
    markers: list[Marker]
    adds_lines: bool


@dataclass(frozen=True)
class Edge:
    """A verified near-duplicate pair (unordered until provenance directs it)."""

    a: int
    b: int
    similarity: Similarity


@dataclass(frozen=True)
class Repost:
    """A directed edge: `doc_id` was copied from `source_doc_id`."""

    doc_id: int
    source_doc_id: int
    cluster_id: int
    jaccard: float
    containment: float  # share of the copy's shingles found in its source
    evidence: str


@dataclass
class Cluster:
    cluster_id: int
    members: list[int]
    original_doc_id: int | None
    attributed_source: str | None
    confidence: float
    reason: str
    first_published_at: datetime | None = None


@dataclass(frozen=True)
class ClusterEvent:
    cluster_id: int
    kind: str  # created, grew, merged, original_changed, cleaned_again
    detail: str
    other_cluster_id: int | None = None
