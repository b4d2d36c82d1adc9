"""Worker scheduling: batches prepared in pieces ahead of the linker."""

import gc
import os
from concurrent.futures import Future, ProcessPoolExecutor

from dedup.ahead import PendingBatch, PreparedAhead, _set_up_worker
from dedup.batch import Settings, open_store, prepare_pages
from dedup.linker import Linker
from tests.helpers import linked_rows
from tests.pages import BAKERY_STORY, CANAL_STORY, MARKET_STORY, SEED_DISCLAIMER, article_html, fetched


def test_a_batch_prepared_in_pieces_by_the_workers_is_the_batch_prepared_whole():
    settings = Settings(batch_size=5, prepare_size=2)
    stories = [("Canal", CANAL_STORY), ("Bakery", BAKERY_STORY), ("Market", MARKET_STORY)]
    pages = [fetched(f"https://paper.example/{t.lower()}", article_html(t, story)) for t, story in stories]
    pages.insert(1, fetched("https://paper.example/empty", "<html><body></body></html>"))  # extracts to nothing
    pages.append(fetched("https://relay.example/canal", article_html("Canal", CANAL_STORY)))
    ahead = PreparedAhead(iter([pages]), settings, workers=2)
    try:
        [(number, n_pages, _, pending)] = list(ahead.in_order())
        joined = pending.result()
    finally:
        ahead.close()
    assert (number, n_pages, len(pending.futures)) == (1, 5, 3)  # pieces of 2, 2 and 1 pages
    whole = prepare_pages(pages, settings)
    assert [(f.url, f.error) for f in joined.fetches] == [(f.url, f.error) for f in whole.fetches]
    assert joined.fetches[1].error  # the failure kept its place
    assert [p.fetch.url for p in joined.prepared] == [p.fetch.url for p in whole.prepared]
    for a, b in zip(joined.prepared, whole.prepared, strict=True):
        assert a.cleaned.body == b.cleaned.body
        assert a.signature.hashvalues == b.signature.hashvalues


def test_a_batch_smaller_than_the_workers_pieces_together_is_shared_among_the_workers():
    # the last batch of a run is often short: in one piece, one worker would
    # prepare it while the other sat idle
    settings = Settings(batch_size=10, prepare_size=4)
    pages = [fetched(f"https://paper.example/{n}", "<html><body></body></html>") for n in range(13)]
    ahead = PreparedAhead(iter([pages[:8], pages[8:11], pages[11:]]), settings, workers=2)
    try:
        batches = [(n_pages, len(pending.futures), len(pending.result().fetches)) for _, n_pages, _, pending in ahead.in_order()]
    finally:
        ahead.close()
    # 8 pages: pieces of 4 (prepare_size); 3 pages: pieces of 2 and 1; 2 pages: one each
    assert batches == [(8, 2, 8), (3, 2, 3), (2, 2, 2)]


def test_the_prepared_front_of_a_batch_is_taken_in_input_order_and_the_rest_stays():
    settings = Settings()
    stories = [("Canal", CANAL_STORY), ("Bakery", BAKERY_STORY), ("Market", MARKET_STORY)]
    pieces = [
        prepare_pages([fetched(f"https://paper.example/{t.lower()}", article_html(t, story))], settings) for t, story in stories
    ]
    futures = [Future() for _ in pieces]
    pending = PendingBatch(list(futures))
    futures[1].set_result(pieces[1])
    assert pending.take_prepared() is None  # the first piece is not prepared: nothing is taken out of order
    futures[0].set_result(pieces[0])
    front = pending.take_prepared()
    assert [p.fetch.url for p in front.prepared] == ["https://paper.example/canal", "https://paper.example/bakery"]
    assert pending.futures == [futures[2]] and pending.unfinished() == [futures[2]]
    assert pending.take_prepared() is None
    futures[2].set_result(pieces[2])
    assert [p.fetch.url for p in pending.result().prepared] == ["https://paper.example/market"]


def test_a_batch_linked_in_parts_is_stored_as_the_batch_linked_whole(tmp_path):
    # what a run does at the end of its input (flows/pipeline.py): the
    # prepared front of the last batch is linked while the workers finish it
    settings = Settings()
    pages = [
        fetched("https://paper.example/canal", article_html("Canal", CANAL_STORY, published="2026-01-02T08:00:00")),
        fetched("https://paper.example/bakery", article_html("Bakery", BAKERY_STORY, published="2026-01-02T09:00:00")),
        fetched("https://relay.example/canal", article_html("Canal", CANAL_STORY, [SEED_DISCLAIMER])),
        fetched("https://relay.example/bakery", article_html("Bakery", BAKERY_STORY, [SEED_DISCLAIMER])),
        fetched("https://mirror.example/canal", article_html("Canal", CANAL_STORY[:3], [SEED_DISCLAIMER])),
    ]

    def stored(db, parts) -> list[tuple]:
        store = open_store(str(db), settings)
        run_id = store.start_run("ingest", None, {})
        linker = Linker(store, settings)
        for part in parts:
            linker.link_batch(run_id, prepare_pages(part, settings))
        return linked_rows(store)

    whole = stored(tmp_path / "whole.duckdb", [pages])
    assert whole == stored(tmp_path / "parts.duckdb", [pages[:3], pages[3:]])
    originals = {url: original for url, _, original, *_ in whole}
    assert originals["https://mirror.example/canal"] == originals["https://relay.example/canal"] == 1  # the paper's page


def test_the_workers_hold_the_last_pieces_only_once_the_input_is_all_handed_out():
    settings = Settings(prepare_size=1)
    pages = [fetched(f"https://paper.example/{n}", "<html><body></body></html>") for n in range(4)]
    ahead = PreparedAhead(iter([pages[:2], pages[2:]]), settings, workers=2, ahead=1)
    try:
        batches = ahead.in_order()
        _, _, _, first = next(batches)  # the second batch is handed out as the first is taken
        while not ahead.wait(first, timeout=60):
            pass
        # every piece handed out is prepared, but the input may hold more
        assert not ahead.on_last_pieces(first)
        _, _, _, second = next(batches)  # and now the input is found to end
        assert ahead.on_last_pieces(second)  # two pieces at most are left, one for each worker
        while not ahead.wait(second, timeout=60):
            pass
        assert [len(first.result().fetches), len(second.result().fetches)] == [2, 2]
        assert next(batches, None) is None
    finally:
        ahead.close()


def test_a_worker_collects_garbage_though_it_was_forked_with_the_collector_off_but_not_over_what_it_inherited():
    # the command line turns the collector off while it imports, and its
    # workers fork meanwhile
    gc.disable()
    try:
        with ProcessPoolExecutor(1, initializer=_set_up_worker, initargs=(os.getpid(),)) as pool:
            assert pool.submit(gc.isenabled).result(timeout=60) is True
            # what it inherited is out of its collections' sight
            assert pool.submit(gc.get_freeze_count).result(timeout=60) > 10_000
    finally:
        gc.enable()
