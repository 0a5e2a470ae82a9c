"""The drawing demo: `app.py` (FastAPI: the page and its JSON API) and `static/` (the page itself)."""
