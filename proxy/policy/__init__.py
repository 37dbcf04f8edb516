"""Gatekeeping: API keys, allowed networks, per-key rules (KEYS_FILE), rate/token/concurrency limits.

``keys`` parses keys and networks and matches presented keys in constant time; ``keysfile`` reads the
per-key TOML file and reloads it when it changes; ``limits`` keeps the counters (memory, or Redis through ``redisstore``);
``gate`` hooks it all into Flask. Nothing here stores or logs a key, only key names.
This module holds only the WSGI environ names the views share with the gate (no imports: no cycles).
"""

ENVIRON_KEY_NAME = "llm_proxy.key_name"  # the name of the key that admitted the request (None: no key)
ENVIRON_JSON = "llm_proxy.json"  # the parsed request body, when the gate had to read it (read_json reuses it)
ENVIRON_REFUSED = "llm_proxy.refused"  # set when the gate refused the request: its body is not read for the log
