"""`/metrics` as Prometheus reads it: Moodle calls and delivery latency are monotonic counters
and a histogram shared by every process (kept in the database, so pruning history never sends
them back), beside gauges of the queue and counters of this process's HTTP requests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import MoodleSync, one_class, post_all
from zoho_moodle_sync.worker.upkeep import prune

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(moodle_sync: MoodleSync) -> Samples:
    response = moodle_sync.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_delivery_counts_its_moodle_calls_and_latency_and_pruning_never_lowers_them(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=3)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)

    first = scrape(moodle_sync)

    done = len(moodle_sync.jobs())
    assert moodle_sync.states() == {"done": done}
    created = total(
        first, "zms_moodle_calls_total", tenant="default", function="core_user_create_users"
    )
    assert created >= 1
    assert total(first, "zms_moodle_calls_total", tenant="default") == len(fake_moodle.calls)
    assert total(first, "zms_delivery_latency_seconds_count", tenant="default") == done
    bounds = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in first.items()
        if name == "zms_delivery_latency_seconds_bucket"
    )
    assert [value for _, value in bounds] == sorted(value for _, value in bounds)
    assert bounds[-1] == (float("inf"), done)
    assert total(first, "zms_jobs", tenant="default", kind="deliver", state="done") == done

    prune(moodle_sync.db, retention_days=0.000001)
    moodle_sync.post("students", world.students[:1])

    again = scrape(moodle_sync)
    assert total(again, "zms_moodle_calls_total") == total(first, "zms_moodle_calls_total")
    assert total(again, "zms_delivery_latency_seconds_count") == done


def test_http_requests_are_counted_by_route_template_never_by_raw_path(
    moodle_sync: MoodleSync,
) -> None:
    world = one_class(students=1)
    before = scrape(moodle_sync)
    moodle_sync.post("students", world.students)
    moodle_sync.client.get(f"/v1/records/students/{world.students[0]['id']}")

    after = scrape(moodle_sync)

    def requests(samples: Samples, route: str) -> float:
        return total(samples, "zms_http_requests_total", route=route)

    assert requests(after, "/v1/sync/{entity}") == requests(before, "/v1/sync/{entity}") + 1
    record_route = "/v1/records/{entity}/{zoho_id}"
    assert requests(after, record_route) == requests(before, record_route) + 1
    labels = {
        value for (name, ls), _ in after.items() if name.startswith("zms_http") for _, value in ls
    }
    assert world.students[0]["id"] not in labels
