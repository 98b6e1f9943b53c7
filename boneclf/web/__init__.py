"""`bonedb serve`: the dataset in a browser, over the same database, for stewards who review.

FastAPI with server-rendered Jinja2 pages and a little plain JavaScript (no build chain). One router per
resource (routes/); each page and its /api/ twin depend on one data function over the library's queries
(data/browse.py, store/runs.py, ...), so a page and its API show the same data.
"""
