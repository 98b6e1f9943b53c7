"""`bonedb serve`: the dataset in a browser, over the same database, for stewards who review.

FastAPI with server-rendered Jinja2 pages and a little plain JavaScript (no build chain); the
same library queries (data/browse.py, store/runs.py, ...) answer the pages and the /api/ JSON.
"""
