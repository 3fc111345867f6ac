"""The sandbox's Wazuh, Loki and LLM services speak their products' wire formats (facts §8, §10,
OpenAI chat completions), including their error answers."""

from __future__ import annotations

from typing import Any

import httpx
import yaml


def systems(sandbox: Any) -> dict[str, Any]:
    return dict(yaml.safe_load(sandbox.config_path.read_text())["systems"])


def client(sandbox: Any) -> httpx.Client:
    return httpx.Client(verify=str(sandbox.ca_path), timeout=10)


def test_wazuh_api_login_agents_and_errors(sandbox: Any) -> None:
    api = systems(sandbox)["wazuh"]["api"]
    password = sandbox.secret("wazuh_api_password")
    with client(sandbox) as http:
        denied = http.post(f"{api['url']}/security/user/authenticate", auth=("wazuh-wui", "x"))
        assert denied.status_code == 401
        assert denied.json() == {"title": "Unauthorized", "detail": "Invalid credentials"}
        login = http.post(
            f"{api['url']}/security/user/authenticate", auth=(api["username"], password)
        )
        body = login.json()
        assert body["error"] == 0 and body["data"]["token"].count(".") == 2
        no_token = http.get(f"{api['url']}/agents")
        assert no_token.json()["detail"] == "No authorization token provided"
        headers = {"Authorization": f"Bearer {body['data']['token']}"}
        agents = http.get(
            f"{api['url']}/agents",
            headers=headers,
            params={"status": "never_connected", "select": "name,status"},
        ).json()
        assert agents["error"] == 0 and agents["message"].startswith("All selected agents")
        data = agents["data"]
        assert data["total_failed_items"] == 0 and data["failed_items"] == []
        assert data["affected_items"] == [
            {
                "id": data["affected_items"][0]["id"],
                "name": "new-ct-enrolled",
                "status": "never_connected",
            }
        ]
        bad = http.get(f"{api['url']}/agents", headers=headers, params={"status": "sleeping"})
        assert bad.status_code == 400


def test_wazuh_indexer_search_shapes(sandbox: Any) -> None:
    idx = systems(sandbox)["wazuh"]["indexer"]
    auth = (idx["username"], sandbox.secret("wazuh_indexer_password"))
    with client(sandbox) as http:
        assert http.post(f"{idx['url']}/wazuh-alerts-*/_search", json={}).status_code == 401
        body = {
            "size": 3,
            "sort": [{"timestamp": {"order": "desc"}}],
            "query": {
                "bool": {
                    "filter": [
                        {"range": {"timestamp": {"gte": "now-24h"}}},
                        {"range": {"rule.level": {"gte": 10}}},
                    ]
                }
            },
            "aggs": {
                "rules": {
                    "terms": {"field": "rule.id", "size": 5},
                    "aggs": {"agents": {"terms": {"field": "agent.name"}}},
                }
            },
        }
        out = http.post(f"{idx['url']}/wazuh-alerts-*/_search", json=body, auth=auth).json()
        hits = out["hits"]["hits"]
        assert out["hits"]["total"]["relation"] == "eq" and len(hits) == 3
        stamps = [h["_source"]["timestamp"] for h in hits]
        assert stamps == sorted(stamps, reverse=True)
        assert all(h["_source"]["rule"]["level"] >= 10 for h in hits)
        assert stamps[0][-5:] == "+0000" and hits[0]["_index"].startswith("wazuh-alerts-4.x-")
        buckets = out["aggregations"]["rules"]["buckets"]
        assert sum(b["doc_count"] for b in buckets) == out["hits"]["total"]["value"]
        assert buckets[0]["agents"]["buckets"]
        too_big = http.post(f"{idx['url']}/wazuh-alerts-*/_search", json={"size": 20000}, auth=auth)
        assert too_big.status_code == 400 and "Result window is too large" in too_big.text


def test_loki_query_range(sandbox: Any) -> None:
    url = systems(sandbox)["loki"]["url"]
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{url}/ready").text.strip() == "ready"
        out = http.get(
            f"{url}/loki/api/v1/query_range",
            params={"query": '{job="auth"} |= "Failed password" != "root"', "limit": 7},
        ).json()
        assert out["status"] == "success" and out["data"]["resultType"] == "streams"
        values = [v for s in out["data"]["result"] for v in s["values"]]
        assert len(values) <= 7
        assert all(isinstance(ts, str) and ts.isdigit() and len(ts) == 19 for ts, _ in values)
        assert all("Failed password" in line and "root" not in line for _, line in values)
        assert (
            http.get(
                f"{url}/loki/api/v1/query_range", params={"query": "sum(rate(x[5m]))"}
            ).status_code
            == 400
        )


def test_llm_endpoint_records_and_fails_per_model(sandbox_clean: Any) -> None:
    llm = systems(sandbox_clean)["llm"]
    base = llm["models"][0]["api_base"]
    key = sandbox_clean.secret("llm_api_key")
    body = {
        "model": "sandbox-primary",
        "messages": [{"role": "user", "content": "IP_1 hit HOST_2"}],
    }
    with httpx.Client(timeout=10) as http:
        assert http.post(f"{base}/chat/completions", json=body).status_code == 401
        ok = http.post(
            f"{base}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert ok["object"] == "chat.completion" and ok["usage"]["total_tokens"] > 0
        assert "IP_1, HOST_2" in ok["choices"][0]["message"]["content"]
        sandbox_clean.set_faults("llm", extra={"fail_models": {"sandbox-primary": 429}})
        limited = http.post(
            f"{base}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert limited.status_code == 429 and limited.json()["error"]["code"]
    recorded = sandbox_clean.control("llm", "prompts")["prompts"]
    assert recorded[-1]["messages"] == body["messages"]
