"""Past one machine: the CPU stages on a local Dask cluster (prefect-dask) and
the LSH index in a real redis-server give the same database as the in-process run."""

import os
import shutil
import subprocess
import time

import duckdb
import numpy as np
import pytest

from dedup.batch import Settings
from dedup.fingerprint import FingerprintConfig, fingerprints
from dedup.link import CandidateIndex, LinkConfig, RedisCandidateIndex
from flows.local_api import free_port
from flows.pipeline import ingest_flow
from tests.helpers import answers, write_warc
from tests.pages import SEED_DISCLAIMER, article_html, generated_story

pytestmark = pytest.mark.usefixtures("prefect_harness")

REDIS_SERVER = shutil.which("redis-server")
# CI sets REPOSTS_REQUIRE_REDIS: there a missing redis-server fails instead of skipping
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None and not os.environ.get("REPOSTS_REQUIRE_REDIS"),
    reason="redis-server is not installed (make services installs it)",
)


def story_warc(path):
    """Twelve stories on publishers, each reposted once or twice with the seed disclaimer."""
    records = []
    for n in range(12):
        story = generated_story(n, paragraphs=5)
        published = f"2026-03-{n + 1:02d}T08:00:00"
        original = article_html(f"Story {n}", story, published=published, site_name=f"Paper {n % 3}")
        records.append((f"https://paper{n % 3}.example/news/{n}.html", original.encode(), "text/html; charset=utf-8"))
        for copy in range(1 + n % 2):
            reposted = article_html(f"Story {n}", story[: 5 - copy], [SEED_DISCLAIMER], site_name="Relay")
            records.append((f"https://relay{copy}.example/{n}.html", reposted.encode(), "text/html; charset=utf-8"))
    return write_warc(path, records)


def database_rows(db):
    con = duckdb.connect(db, read_only=True)
    try:
        documents = con.execute("SELECT url, body, n_shingles, minhash, cluster_id FROM documents ORDER BY url").fetchall()
        clusters = con.execute(
            """SELECT c.cluster_id, o.url, c.size, c.reason FROM clusters c
               LEFT JOIN documents o ON o.doc_id = c.original_doc_id ORDER BY c.cluster_id"""
        ).fetchall()
        reposts = con.execute(
            """SELECT d.url, s.url FROM reposts r JOIN documents d USING (doc_id)
               JOIN documents s ON s.doc_id = r.source_doc_id ORDER BY d.url"""
        ).fetchall()
    finally:
        con.close()
    return documents, clusters, reposts


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


def test_ingest_on_a_dask_cluster_equals_the_in_process_run(tmp_path, dask_cluster):
    warc = str(story_warc(tmp_path / "stories.warc.gz"))
    local, distributed = str(tmp_path / "local.duckdb"), str(tmp_path / "dask.duckdb")
    ingest_flow([warc], db=local, settings=Settings(batch_size=7))
    summary = ingest_flow([warc], db=distributed, settings=Settings(batch_size=7), dask_address=dask_cluster)
    assert summary["pages"] == 30
    assert database_rows(distributed) == database_rows(local)
    # the batches were prepared by the cluster's workers
    from distributed import Client

    with Client(dask_cluster) as client:
        prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert "prepare_pages" in prefixes


@needs_redis
def test_ingest_with_the_lsh_index_in_redis_equals_the_in_memory_run(tmp_path, redis_url):
    warc_one = str(story_warc(tmp_path / "stories.warc.gz"))
    memory, in_redis = str(tmp_path / "memory.duckdb"), str(tmp_path / "redis.duckdb")
    redis_settings = Settings(batch_size=7, link=LinkConfig(redis_url=redis_url))
    ingest_flow([warc_one], db=memory, settings=Settings(batch_size=7))
    ingest_flow([warc_one], db=in_redis, settings=redis_settings)
    assert database_rows(in_redis) == database_rows(memory)


@needs_redis
def test_the_redis_index_outlives_the_run_and_answers_as_the_memory_index(redis_url):
    fp, link = FingerprintConfig(), LinkConfig(lsh_bands=64)
    texts = [" ".join(generated_story(n, paragraphs=3)) for n in range(40)]
    texts += [t[: len(t) // 2] for t in texts[:10]]  # cut copies
    values = np.stack([np.frombuffer(s.hashvalues, dtype=fp.dtype) for s in fingerprints(texts, fp)])
    memory = CandidateIndex(link, fp)
    memory.load([(np.arange(1, 41), values[:40])])
    first = RedisCandidateIndex(link, fp, redis_url, namespace="outlives")
    first.load([(np.arange(1, 41), values[:40])])
    # a later run: a new index object loads nothing it holds already, then adds a batch
    second = RedisCandidateIndex(link, fp, redis_url, namespace="outlives")
    assert second.indexed_through() == 40 and len(second) == 40
    second.load([(np.arange(1, 41), values[:40])])
    assert len(second) == 40
    memory.add_many(list(range(41, 51)), values[40:])
    second.add_many(list(range(41, 51)), values[40:])
    assert answers(second, values) == answers(memory, values)
    assert all(n + 1 in found for n, found in enumerate(answers(second, values[:40])))
    assert all(41 + n in found and n + 1 in found for n, found in enumerate(answers(second, values[40:])))
    # an id indexed by a run that died before committing is replaced, not doubled
    second.add_many([45], values[:1])
    assert 45 in answers(second, values[:1])[0] and 45 not in answers(second, values[44:45])[0]
