"""The log view's URL arguments: a value no query can take (NUL, NaN, infinities, numbers past a BIGINT, a time
outside the years a datetime holds, a malformed cursor) is a 400 with a message naming the argument, as JSON
under /ui/api and as a page elsewhere, on every kind of log database; never a 500 (issue 10, item 14)."""
from __future__ import annotations

import pytest

from proxy import create_app
from proxy.config import Settings

BIG = "99999999999999999999999"
BAD_FILTERS = [
    ("limit", "1e999"), ("limit", BIG), ("limit", "0"), ("after_id", BIG), ("after_id", "-1"), ("since", "nan"),
    ("since", "inf"), ("until", "-inf"), ("since", "1e400"), ("since", "99999999999999999999"),
    ("model", "a\x00b"), ("q", "needle\x00"), ("client", "\x00"), ("endpoint", "/api\x00"), ("outcome", "ok\x00"),
    ("before", "nan_1"), ("before", f"1_{BIG}"), ("before", "garbage"), ("status", BIG), ("status", "teapot"),
]
BAD_TIMES = ["nan", "inf", "-inf", "1e400", "99999999999999999999", "\x00", "yesterday",
             "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]


@pytest.fixture
def client(db_url):  # noqa: F811
    app = create_app(Settings.from_env({"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "LOG_LEVEL": "WARNING",
                                        "LOG_CLEANUP_MINUTES": "0", "DATABASE_URL": db_url}))
    yield app.test_client()
    app.extensions["llm_proxy"].extras["log_store"].close()


@pytest.mark.parametrize("name, value", BAD_FILTERS)
def test_a_filter_no_query_can_take_is_a_400_naming_it(client, name, value):
    r = client.get("/ui/api/logs", query_string={name: value})
    assert r.status_code == 400, r.data[:300]
    assert r.json["error"].startswith(name), r.json
    page = client.get("/ui/logs", query_string={name: value}, headers={"Accept": "text/html"})
    assert page.status_code == 400 and page.content_type.startswith("text/html")
    assert name.encode() in page.data


@pytest.mark.parametrize("value", BAD_TIMES)
def test_an_export_date_no_query_can_take_is_a_400(client, value):
    for name in ("since", "until"):
        r = client.get("/ui/api/export", query_string={name: value})
        assert r.status_code == 400 and r.json["error"].startswith(name), (r.status_code, r.data[:300])


def test_good_filters_and_dates_still_work(client):
    for args in ({"limit": "10000"}, {"since": "0", "until": "253402300799"}, {"status": "4xx"}, {"status": "404"},
                 {"before": "1700000000.5_12"}, {"after_id": "9223372036854775807"}, {"q": "needle"}):
        assert client.get("/ui/api/logs", query_string=args).status_code == 200, args
    for value in ("2025-01-01", "2025-01-01T10:00:00Z", "1735689600"):
        assert client.get("/ui/api/export", query_string={"since": value}).status_code == 200


@pytest.mark.parametrize("path", ["/ui/logs/", "/ui/api/logs/"])
def test_an_exchange_id_past_a_bigint_is_not_found(client, path):
    assert client.get(path + "99999999999999999999999").status_code == 404
