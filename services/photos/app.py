"""The photos service's app factory and its routes, in one place, and its
entry point. It holds no database (README.md: why), so it is built on the
shared Routes, metrics and JSON errors rather than on `base_app`."""

from __future__ import annotations

import logging

import uvloop
from aiohttp import web

from services.common.app import Routes, healthz, metrics_view, no_route
from services.common.logs import configure_logging
from services.common.metrics import Metrics
from services.common.observe import observed
from services.common.resources import METRICS
from services.common.responses import json_response

from . import views
from .resources import (
    PHOTO_SETTINGS,
    STORE,
    UPLOAD_SLOTS,
    UploadSlots,
    imaging_ctx,
    store_ctx,
)
from .settings import MAX_UPLOAD_BYTES, PhotoSettings

log = logging.getLogger("runway.photos")


def create_app(settings: PhotoSettings) -> web.Application:
    # The body limit is enforced while reading (views._read_upload); this one
    # only has to let a whole multipart upload through.
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 64 * 1024)
    app[PHOTO_SETTINGS] = settings
    app[METRICS] = Metrics(settings.service)
    app[UPLOAD_SLOTS] = UploadSlots(settings.workers * 4)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(imaging_ctx)
    r = Routes(app)
    r.get("/healthz", healthz, allow_head=True)
    r.get("/readyz", readyz, allow_head=True)
    r.get("/metrics", metrics_view, allow_head=True)
    for path in ("/photos", "/photos/"):
        r.post(path, views.upload)
    r.get("/photos/{name}", views.serve, allow_head=True)
    app.router.add_route("*", "/{path:.*}", observed(no_route, app[METRICS], "unmatched", None))
    return app


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store can be written."""
    try:
        await request.app[STORE].check()
    except Exception as exc:  # any failure means not ready
        log.warning("readiness: store check failed: %r", exc)
        return json_response(b'{"status":"unavailable","store":"down"}', status=503)
    return json_response(b'{"status":"ready","store":"up"}')


def main() -> None:
    settings = PhotoSettings.from_env()
    configure_logging(settings.service, settings.log_level)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        print=None,
        shutdown_timeout=10,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
