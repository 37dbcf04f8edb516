"""Gatekeeping: API keys, allowed networks, per-key rules (KEYS_FILE), rate/token/concurrency limits.

``keys`` matches presented keys in constant time; ``keysfile`` reads the per-key TOML file and reloads it
when it changes; ``limits`` keeps the counters (memory or Redis); ``gate`` hooks it all into Flask. Nothing
here stores or logs a key, only key names. The environ keys the gate shares with the views are in
``proxy.environ``.
"""
