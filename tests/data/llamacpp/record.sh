#!/usr/bin/env bash
# Re-record the llama-server fixtures in this folder.
#
#   tests/data/llamacpp/record.sh [http://127.0.0.1:PORT]
#
# against a llama-server started as
#   llama-server -m SmolLM2-135M-Instruct.Q4_1.gguf --host 127.0.0.1 --port PORT -c 2048 --alias smollm2
# Each request writes <name>.<ext> (exact response body bytes) and <name>.headers
# (status line and response headers). Volatile values (ids, timestamps, timings) are
# left as recorded.
set -euo pipefail
BASE="${1:-http://127.0.0.1:8080}"
cd "$(dirname "$0")"

rec() {  # rec NAME METHOD URL [BODY]
    local name="$1" method="$2" url="$3" body="${4-}"
    if [ -n "$body" ]; then
        curl -sS --no-buffer -X "$method" -H 'Content-Type: application/json' \
            --data-binary "$body" -D "$name.headers" -o "$name.tmp" "$url"
    else
        curl -sS --no-buffer -X "$method" -D "$name.headers" -o "$name.tmp" "$url"
    fi
    # drop the Date header so re-recordings diff cleanly; keep everything else
    sed -i '/^[Dd]ate:/d' "$name.headers"
    local ext="json"
    if grep -qi '^content-type: text/event-stream' "$name.headers"; then ext="sse"; fi
    if ! grep -qi '^content-type:.*json' "$name.headers" && [ "$ext" = json ]; then ext="txt"; fi
    mv "$name.tmp" "$name.$ext"
    echo "$name.$ext: $(head -n1 "$name.headers" | tr -d '\r')"
}

CHAT='"model":"smollm2","messages":[{"role":"user","content":"Name three colours."}],"temperature":0,"max_tokens":16'
COMPL='"model":"smollm2","prompt":"The capital of France is","temperature":0,"max_tokens":16'
LONG="$(python3 -c 'print("hello " * 3000)')"
TOOLS='"tools":[{"type":"function","function":{"name":"get_weather","description":"Get the current weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]'
TOOLMSG='"model":"smollm2","messages":[{"role":"user","content":"What is the weather in Paris? Use the get_weather tool."}],"temperature":0,"max_tokens":16'

rec health GET "$BASE/health"
rec models GET "$BASE/v1/models"
rec props GET "$BASE/props"
rec chat_completions POST "$BASE/v1/chat/completions" "{$CHAT}"
rec chat_completions_stream POST "$BASE/v1/chat/completions" "{$CHAT,\"stream\":true}"
rec chat_completions_stream_include_usage POST "$BASE/v1/chat/completions" \
    "{$CHAT,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
rec chat_completions_stream_finish_stop POST "$BASE/v1/chat/completions" \
    '{"model":"smollm2","messages":[{"role":"user","content":"Reply with the single word: yes"}],"temperature":0,"max_tokens":64,"stream":true}'
rec completions POST "$BASE/v1/completions" "{$COMPL}"
rec completions_stream POST "$BASE/v1/completions" "{$COMPL,\"stream\":true}"
rec completions_stream_include_usage POST "$BASE/v1/completions" \
    "{$COMPL,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
rec error_malformed_json POST "$BASE/v1/chat/completions" '{"model": "smollm2", "messages": ['
rec error_unknown_route GET "$BASE/api/tags"
rec error_context_overflow POST "$BASE/v1/chat/completions" \
    "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":\"$LONG\"}],\"max_tokens\":16}"
rec error_context_overflow_stream POST "$BASE/v1/chat/completions" \
    "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":\"$LONG\"}],\"max_tokens\":16,\"stream\":true}"
# SmolLM2's template has no tool support (props.chat_template_caps.supports_tools=false):
# llama-server (jinja on by default in this build) ignores `tools`, even with tool_choice=required.
rec chat_completions_tools_ignored POST "$BASE/v1/chat/completions" "{$TOOLMSG,$TOOLS}"
rec chat_completions_tools_ignored_stream POST "$BASE/v1/chat/completions" "{$TOOLMSG,$TOOLS,\"stream\":true}"
rec chat_completions_tools_required_ignored POST "$BASE/v1/chat/completions" \
    "{$TOOLMSG,$TOOLS,\"tool_choice\":\"required\"}"
