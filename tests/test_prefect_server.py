"""The scheduled crawl as users run it: a real Prefect server (not the test
harness), the deployments of prefect.yaml on a process work pool, a worker
that runs the flow in its own process, and the artifacts read back through
the Prefect client."""

import json

import duckdb
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.local_api import free_port
from flows.ui import LocalPrefect
from tests.helpers import serve_story_web


def test_the_crawl_deployment_runs_on_a_worker_and_leaves_its_summary(tmp_path, httpserver):
    urls = serve_story_web(httpserver)
    db = str(tmp_path / "scheduled.duckdb")
    local = LocalPrefect(tmp_path / "prefect-home", port=free_port())
    local.start_server()
    try:
        local.deploy()
        with temporary_settings(updates={PREFECT_API_URL: local.api_url}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("crawl/crawl")
            assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [("0 * * * *", "UTC")]
            assert deployment.global_concurrency_limit.limit == 1
            assert deployment.parameters["sources_file"] == "sources.txt"
            # this test must not fetch the example sources on the hour: stop the schedule
            client.update_deployment_schedule(deployment.id, deployment.schedules[0].id, active=False)
            local.start_worker()
            run = run_deployment(
                "crawl/crawl",
                parameters={"urls": urls, "sources_file": None, "db": db, "allow_private_network": True},
                timeout=240,
                poll_interval=2,
            )
            assert run.state.is_completed(), run.state
            assert run.name.startswith("crawl ") and run.name.endswith(", 5 sources")
            artifacts = {
                a.key: a for a in client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            }
    finally:
        local.stop()
    assert {"crawl-progress", "crawl-summary", "crawl-copy-map", "crawl-clusters", "crawl-failed-fetches"} <= set(artifacts)
    assert all(artifacts[k].description for k in ("crawl-summary", "crawl-clusters", "crawl-failed-fetches"))
    summary = artifacts["crawl-summary"].data
    assert "| new documents | 3 |" in summary and "| failed | 2 |" in summary and "| new clusters | 2 |" in summary
    clusters = json.loads(artifacts["crawl-clusters"].data)
    assert [(c["size"], c["original"]) for c in clusters] == [(2, urls[0])]
    assert urls[1] in clusters[0]["new_urls"]
    failed = json.loads(artifacts["crawl-failed-fetches"].data)
    assert sorted(f["url"] for f in failed) == sorted(urls[3:])
    assert artifacts["crawl-progress"].data == 100.0
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 3
    assert con.execute("SELECT flow_run_id FROM runs").fetchone()[0] == str(run.id)
    con.close()
