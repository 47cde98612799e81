"""The web console at /ui: healer's own server-rendered pages over the services the API
uses (heals, one heal's timeline, rules, pause and circuits, approvals).

``routes.py`` (the pages you read), ``actions.py`` (the forms that change things),
``access.py`` (who may do which), ``session.py`` (login sessions, cookie, CSRF),
``render.py`` (templates, security headers, static files), ``views.py`` (what a page
shows, from the services), ``svg.py`` (the verify-sample chart). Templates and static
files are package data. See docs/console.md.
"""
