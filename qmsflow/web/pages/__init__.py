"""The dashboard, one router per area; each is built on the shared ``web.site.Site``.

No module here uses ``from __future__ import annotations``: FastAPI reads the dependency annotations
(``site.User``) when a route is defined.
"""
