"""Streams: framing and the stream translators fed recorded streams (tests/data/wire) split at
every byte offset, and the same behaviour over real sockets with a fake upstream from
tests/conftest.py."""
