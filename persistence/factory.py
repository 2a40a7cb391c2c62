"""Chooses the `Store` backend from `--database-url` and the blob store from `--blob-url`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from persistence.blobs import BlobStore, FileBlobStore
from persistence.ports import Store

DEFAULT_SQLITE_NAME = "escenario.db"


async def open_store(database_url: str, *, data_dir: Path) -> Store:
    """Open and migrate the store that `database_url` names.

    - `sqlite://` or `sqlite:///` → `data_dir/escenario.db`
    - `sqlite:///relative/path.db` → relative to the working directory, and
      `sqlite:////absolute/path.db` → absolute (the SQLAlchemy convention operators know)
    - `sqlite:///:memory:` → a private in-memory database (tests)
    - `postgresql://…` or `postgres://…` → PostgreSQL; query parameters other than libpq's
      become server settings, so `?search_path=escenario` selects a schema
    """
    scheme, sep, rest = database_url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"database URL {database_url!r} has no scheme; use sqlite:///… or postgresql://…")
    store: Store
    if scheme == "sqlite":
        from persistence.sqlite import SqliteStore

        store = SqliteStore(_sqlite_path(database_url, rest, data_dir))
    elif scheme in ("postgresql", "postgres"):
        from persistence.postgres import PostgresStore

        store = PostgresStore(database_url)
    else:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r} in {database_url!r}; "
            "use sqlite:///path/to/file.db or postgresql://user@host/dbname"
        )
    try:
        await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store


def _sqlite_path(url: str, rest: str, data_dir: Path) -> str | Path:
    if "?" in rest or "#" in rest:
        raise ValueError(f"SQLite URL {url!r} must not have query parameters or a fragment")
    if rest and not rest.startswith("/"):
        # sqlite://host/… would silently drop "host"; there is no host for a file.
        raise ValueError(f"SQLite URL {url!r} must be sqlite:///relative.db or sqlite:////absolute.db")
    path = rest[1:]
    if not path:
        return data_dir / DEFAULT_SQLITE_NAME
    if path == ":memory:":
        return path
    return Path(path)


async def open_blob_store(blob_url: str, *, data_dir: Path) -> BlobStore:
    """The plain (unencrypted) blob store that `blob_url` names.

    - `""` → files under `data_dir/blobs` (the default)
    - `s3://bucket/prefix?endpoint=…&region=…` → objects in an S3-compatible bucket, checked
      reachable now (credentials from the standard AWS environment variables or profile)
    """
    if not blob_url:
        return FileBlobStore(Path(data_dir) / "blobs")
    from persistence.s3_blobs import S3BlobStore, parse_blob_url

    location = parse_blob_url(blob_url)
    # Making a boto3 client loads its service model from disk: not on the event loop.
    store = await asyncio.to_thread(S3BlobStore, location)
    await store.check()
    return store
