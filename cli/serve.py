"""`bonedb serve`: the dataset in a browser (boneclf/web), over the configured database."""

from __future__ import annotations

from pathlib import Path

import click

from boneclf.errors import BonedbError

from .context import Database, pass_db


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--token", envvar="BONEDB_SERVE_TOKEN", metavar="TOKEN",
              help="Every request must present it (Authorization: Bearer TOKEN, or ?token=TOKEN once in a "
                   "browser). Default: $BONEDB_SERVE_TOKEN.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where thumbnails, Grad-CAM overlays and reports are kept; it must be writable (checked at "
                   "start). Default: $XDG_CACHE_HOME/bonedb/serve/DATABASE (else ~/.cache/...), one folder per "
                   "database, never the working folder.")
@click.option("--allow-host", "also_hosts", multiple=True, metavar="NAME",
              help="Another host name this loopback server answers to: a reverse proxy's public name, forwarded "
                   "with its Host header kept. Repeatable.")
@pass_db
def serve(database: Database, host, port, token, cache_dir, also_hosts):
    """Browse the database in a web browser: datasets and their counts, studies with thumbnails, a study's
    images, label history and ingests, splits with their audit, runs with reports and Grad-CAM; record
    review decisions (label confirmed or disputed). A JSON API lives under /api/, documented at /docs.

    \b
    Examples:
      bonedb serve
      bonedb --database-url sqlite:///bonedb-demo/bonedb.sqlite serve --port 8080
      bonedb serve --host 0.0.0.0 --port 8080    # with BONEDB_SERVE_TOKEN set
      bonedb serve --allow-host bonedb.example.org  # behind a TLS reverse proxy of that name
    """
    from boneclf.web.security import is_loopback, served_hosts

    if not is_loopback(host) and not token:
        raise BonedbError(f"--host {host} reaches beyond this machine: pass --token TOKEN (or set "
                          "BONEDB_SERVE_TOKEN) so that only those who have it get in")
    import uvicorn

    from boneclf.web.app import create_app

    # On loopback, only loopback host names are answered (no DNS rebinding from a web page).
    app = create_app(database.url, token=token or None, cache_dir=cache_dir, hosts=served_hosts(host, also_hosts))
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"bonedb serving {database.masked_url} at http://{shown}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
