"""One batch through the stages: the settings, and the CPU half.

`prepare_pages` runs extract -> clean -> fingerprint on fetched pages (CPU
work, safe to run in worker processes); dedup/ahead.py keeps the workers a
few batches ahead, and dedup/linker.py links, clusters and stores each
prepared batch in turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice

from dedup.boilerplate import (
    BoilerplateConfig,
)
from dedup.clean import CleanConfig, strip_markers
from dedup.extract import ExtractConfig, ExtractionError, extract_article
from dedup.fetch import FetchConfig
from dedup.fingerprint import FingerprintConfig, fingerprints
from dedup.link import LinkConfig
from dedup.models import (
    Article,
    CleanedArticle,
    FetchedPage,
    Signature,
)
from dedup.provenance import (
    ProvenanceConfig,
)
from dedup.store import Store


@dataclass(frozen=True)
class Settings:
    """Every stage's settings; each stage gets only its own part."""

    fetch: FetchConfig = field(default_factory=FetchConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    boilerplate: BoilerplateConfig = field(default_factory=BoilerplateConfig)
    fingerprint: FingerprintConfig = field(default_factory=FingerprintConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)
    # Pages per batch: one transaction, one task run. Large enough that a
    # batch's fixed cost (its DuckDB statements, an LSH search of each saved
    # table, a task run) is small per page, small enough that a crash loses
    # little work (docs/internals.md, "Batch size").
    batch_size: int = 400
    # Pages per piece of a batch that one worker prepares (extract, clean,
    # fingerprint): a batch goes to the workers in pieces, so that at the
    # end of the input they run out of work together (with whole batches
    # one worker sat idle for up to a batch's time while the other finished).
    # A batch of fewer pages than the workers' pieces together (the last one
    # of a run, most often) is cut into one piece per worker instead.
    prepare_size: int = 50


@dataclass(frozen=True)
class Prepared:
    """A page that extracted to an article, cleaned and fingerprinted."""

    fetch: FetchedPage
    cleaned: CleanedArticle
    signature: Signature
    doc_id: int | None = None  # a stored page's id, kept when it is linked again (rebuild)


@dataclass(frozen=True)
class PreparedBatch:
    prepared: list[Prepared]
    # every attempt, with the error of those that yielded no article
    fetches: list[FetchedPage]


def prepare_pages(pages: list[FetchedPage], settings: Settings) -> PreparedBatch:
    """Extract and clean each page, then fingerprint the batch's bodies together.
    The attempts come back without their HTML (see FetchedPage.without_body)."""
    outcomes: list[FetchedPage | tuple[FetchedPage, Article]] = []
    for page in pages:
        try:
            outcomes.append((page.without_body(), extract_article(page, settings.extract)))
        except ExtractionError as exc:
            outcomes.append(_with_error(page.without_body(), str(exc)))
    return _cleaned_and_fingerprinted(outcomes, settings)


def prepare_articles(articles: list[tuple[int, Article]], settings: Settings) -> PreparedBatch:
    """Clean and fingerprint stored pages' articles again, keeping their doc
    ids (`reposts rebuild`). The attempts are those of the pages whose body
    is empty once cleaned: they are not stored again."""
    attempts = [FetchedPage(url=a.url, source=a.source, fetched_at=a.fetched_at, final_url=a.final_url) for _, a in articles]
    prepared = _cleaned_and_fingerprinted([(f, a) for f, (_, a) in zip(attempts, articles, strict=True)], settings)
    ids = {a.url: doc_id for doc_id, a in articles}
    return PreparedBatch(
        prepared=[replace(p, doc_id=ids[p.cleaned.article.url]) for p in prepared.prepared],
        fetches=[f for f in prepared.fetches if f.error],
    )


def _cleaned_and_fingerprinted(outcomes: list[FetchedPage | tuple[FetchedPage, Article]], settings: Settings) -> PreparedBatch:
    """Clean each extracted article, then fingerprint the batch's bodies together."""
    cleaned = {n: strip_markers(o[1], settings.clean) for n, o in enumerate(outcomes) if isinstance(o, tuple)}
    signatures = iter(fingerprints([c.body for c in cleaned.values()], settings.fingerprint))
    prepared, fetches = [], []
    for n, outcome in enumerate(outcomes):
        if not isinstance(outcome, tuple):
            fetches.append(outcome)
            continue
        page, article = outcome[0], cleaned[n]
        signature = next(signatures)
        if not len(signature.shingles):
            fetches.append(_with_error(page, "article body is empty once repost markers are removed"))
            continue
        prepared.append(Prepared(fetch=page, cleaned=article, signature=signature))
        fetches.append(page)
    return PreparedBatch(prepared=prepared, fetches=fetches)


def _with_error(page: FetchedPage, error: str) -> FetchedPage:
    return replace(page, error=error)


@dataclass
class BatchStats:
    pages: int = 0
    failed: int = 0
    new_clusters: int = 0
    grown_clusters: int = 0
    merged_clusters: int = 0
    originals_found: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchStats) -> None:
        for name in ("pages", "failed", "new_clusters", "grown_clusters", "merged_clusters", "originals_found"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count


def batches_of(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def run_description(kind: str, n_inputs: int) -> str:
    """How a run names itself in the run lock, for a second run that finds the database busy."""
    return {"ingest": f"an ingest of {n_inputs} WARC file(s)", "crawl": f"a crawl of {n_inputs} URL(s)"}[kind]


def open_store(db: str, settings: Settings) -> Store:
    """The database, migrated, checked to hold signatures made with these settings."""
    store = Store(db)
    store.migrate()
    store.check_signature_params(settings.fingerprint.params())
    return store
