"""What the photos app holds, each under a typed `web.AppKey`, and the
`cleanup_ctx` generators that open and close them: the store (a local
directory or an S3 bucket) and the threads that decode and encode images.
Nothing here does I/O until the app starts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from aiohttp import web

from .s3_store import S3Store
from .settings import PhotoSettings
from .store import LocalStore, PhotoStore

PHOTO_SETTINGS: web.AppKey[PhotoSettings] = web.AppKey("photo_settings", PhotoSettings)
STORE: web.AppKey[PhotoStore] = web.AppKey("photo_store")
IMAGING: web.AppKey[ThreadPoolExecutor] = web.AppKey("imaging", ThreadPoolExecutor)


class UploadSlots:
    """Uploads in progress, bounded: each holds up to 10 MiB of body and, once
    decoding, up to ~160 MB of pixels. Past the bound an upload is refused at
    once (503) instead of queueing for the imaging threads without limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def take(self) -> Iterator[bool]:
        """Yields whether a slot was had (the caller refuses when not)."""
        if self.used >= self.limit:
            yield False
            return
        self.used += 1
        try:
            yield True
        finally:
            self.used -= 1


UPLOAD_SLOTS: web.AppKey[UploadSlots] = web.AppKey("upload_slots", UploadSlots)


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
