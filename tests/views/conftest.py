"""The Flask views and the log view (ui): the front doors' endpoints through the whole WSGI stack,
the log view's pages, sign-in and arguments. The log view's tests read the same databases as the
store's, so they share its fixtures.
"""
from tests.store.conftest import db_url, logged_proxy  # noqa: F401 - fixtures
