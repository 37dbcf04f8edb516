"""What the log view shows of an exchange (issue 10, item 24): a backend's error answer is stored and shown,
a truncated request is never called "unchanged", and a refused request keeps the model it asked for."""
from __future__ import annotations

import orjson
import requests

from tests.support import fakes
from tests.support.policy import ALICE
from tests.support.store import store_of, wait_rows


def test_a_backend_error_body_is_stored_and_shown(logged_proxy):
    setup = logged_proxy("openai")
    setup.fake.default("POST", setup.chat_path, fakes.text_reply("CUDA out of memory on device 0", status=500))
    resp = requests.post(setup.url + "/v1/chat/completions", timeout=10,
                         json={"model": setup.model, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 500 and "CUDA out of memory" in resp.json()["error"]["message"]
    row = wait_rows(store_of(setup.proxy), 1, endpoint="/v1/chat/completions")[0]
    detail = requests.get(f"{setup.url}/ui/api/logs/{row['id']}", timeout=10).json()
    assert detail["bodies"]["upstream_response"]["text"] == "CUDA out of memory on device 0"
    page = requests.get(f"{setup.url}/ui/logs/{row['id']}", timeout=10).text
    assert "CUDA out of memory on device 0" in page.split('id="section-upstream_response"', 1)[1]


def test_a_truncated_request_is_never_labelled_unchanged(logged_proxy):
    setup = logged_proxy("openai", LOG_MAX_BODY_BYTES="64", INJECT_TEXT="(added by the proxy)")
    setup.script_chat()
    body = orjson.dumps({"model": setup.model, "messages": [{"role": "user", "content": "x" * 300}]})
    resp = requests.post(setup.url + "/v1/chat/completions", data=body, timeout=10,
                         headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    assert "(added by the proxy)" in setup.fake.last(setup.chat_path).body.decode()  # changed past the cut
    row = wait_rows(store_of(setup.proxy), 1, endpoint="/v1/chat/completions")[0]
    page = requests.get(f"{setup.url}/ui/logs/{row['id']}", timeout=10).text
    assert 'id="unchanged"' not in page and 'id="diff-truncated"' in page


def test_a_refused_request_keeps_the_model_it_asked_for(logged_proxy, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.alice]\nmodels = ["other-*"]\n')
    setup = logged_proxy("openai", API_KEYS=f"alice:{ALICE}", KEYS_FILE=str(keys))
    url = setup.url + "/v1/chat/completions"
    body = {"model": "wanted-model", "messages": [{"role": "user", "content": "hi"}]}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    assert requests.post(url, json=body, headers={"Authorization": f"Bearer {ALICE}"}, timeout=10).status_code == 403
    found = wait_rows(store_of(setup.proxy), 2, endpoint="/v1/chat/completions")
    assert sorted((r["status"], r["model"], r["outcome"]) for r in found) == [
        (401, "wanted-model", "refused"), (403, "wanted-model", "refused")]
