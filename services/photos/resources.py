"""What the photos app holds, each under a typed `web.AppKey`, and the
`cleanup_ctx` generators that open and close them: the store (a local
directory or an S3 bucket) and the threads that decode and encode images.
Nothing here does I/O until the app starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .s3_store import S3Store
from .settings import PhotoSettings
from .store import LocalStore, PhotoStore

PHOTO_SETTINGS: web.AppKey[PhotoSettings] = web.AppKey("photo_settings", PhotoSettings)
STORE: web.AppKey[PhotoStore] = web.AppKey("photo_store")
IMAGING: web.AppKey[ThreadPoolExecutor] = web.AppKey("imaging", ThreadPoolExecutor)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[PHOTO_SETTINGS]
    if settings.s3 is not None:
        s3 = S3Store(settings.s3)
        await s3.open()
        app[STORE] = s3
        yield
        await s3.close()
        return
    local = LocalStore(settings.directory)
    local.create()
    app[STORE] = local
    yield


async def imaging_ctx(app: web.Application) -> AsyncIterator[None]:
    """Threads, not processes: Pillow releases the GIL while it decodes,
    resizes and encodes, so these run in parallel with the event loop, and the
    upload's bytes need no copy into another process."""
    pool = ThreadPoolExecutor(app[PHOTO_SETTINGS].workers, thread_name_prefix="imaging")
    app[IMAGING] = pool
    yield
    pool.shutdown(wait=True, cancel_futures=True)
