"""The WSGI environ keys the gate and the views share for one request (no imports: every layer may use it).

The gate sets them before a view runs; the views, the error rendering and the recording read them.
"""

ENVIRON_KEY_NAME = "llm_proxy.key_name"  # the name of the key that admitted the request (None: no key)
ENVIRON_CALLER = "llm_proxy.caller"  # the gate's Caller: key name, limits and the models it may use
ENVIRON_JSON = "llm_proxy.json"  # the parsed request body, when the gate had to read it (read_json reuses it)
ENVIRON_REFUSED = "llm_proxy.refused"  # set when the gate refused the request: its body is not read for the log
