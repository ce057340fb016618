"""The adversarial suite: attack cases by class, run against every front-end.

``cases_*.py`` hold one table per attack class (every case names its source),
``table.py`` joins them, and the ``test_*`` runners put each case through the
ASGI middleware, the reverse proxy (real sockets) and the forward-auth
endpoint. See SECURITY.md for the invariants each class shows.
"""
