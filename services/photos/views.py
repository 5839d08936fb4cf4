"""The photos service's views: `POST /photos` (an image as the body or as the
multipart field `photo`) and `GET`/`HEAD /photos/{name}`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator

import orjson
from aiohttp import BodyPartReader, web

from services.common.errors import ApiError
from services.common.responses import json_response

from . import imaging
from .resources import IMAGING, PHOTO_SETTINGS, STORE, UPLOAD_SLOTS
from .settings import MAX_UPLOAD_BYTES
from .store import CONTENT_TYPES, IMMUTABLE

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
NAME = re.compile(r"^[0-9a-f]{32}(-thumb)?\.(jpg|webp)$")
CHUNK = 256 * 1024
TOO_LARGE = f"photo is larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB limit"

log = logging.getLogger("runway.photos")


async def upload(request: web.Request) -> web.Response:
    with request.app[UPLOAD_SLOTS].take() as admitted:
        if not admitted:
            raise ApiError(503, "too many uploads in progress, try again shortly")
        return await _upload(request)


async def _upload(request: web.Request) -> web.Response:
    data = await _read_upload(request)
    pool = request.app[IMAGING]
    loop = asyncio.get_running_loop()
    # Named by the upload's hash: the same bytes again are the same photo,
    # found without decoding them a second time.
    digest = await loop.run_in_executor(pool, _digest, data)
    store = request.app[STORE]
    try:
        for ext in CONTENT_TYPES:
            if await store.exists(f"{digest}-thumb.{ext}"):  # written last: the pair is whole
                return _created(request, digest, ext)
    except Exception as exc:
        raise _store_unavailable(exc) from exc
    try:
        encoded = await loop.run_in_executor(pool, imaging.process, data)
    except imaging.Rejected as exc:
        raise ApiError(exc.status, exc.message) from None
    try:
        await store.put(f"{digest}.{encoded.extension}", encoded.full, encoded.content_type)
        await store.put(
            f"{digest}-thumb.{encoded.extension}", encoded.thumbnail, encoded.content_type
        )
    except Exception as exc:
        raise _store_unavailable(exc) from exc
    return _created(request, digest, encoded.extension)


def _store_unavailable(exc: Exception) -> ApiError:
    log.warning("photo store failed: %r", exc)
    return ApiError(503, "photo store unavailable, try again shortly")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _created(request: web.Request, digest: str, ext: str) -> web.Response:
    base = request.app[PHOTO_SETTINGS].public_base_url
    body = {
        "url": f"{base}/photos/{digest}.{ext}",
        "thumbnail_url": f"{base}/photos/{digest}-thumb.{ext}",
    }
    return json_response(orjson.dumps(body), status=201)


async def _read_upload(request: web.Request) -> bytes:
    """The image's bytes: the whole body for an image/* request, the `photo`
    field of a multipart one. At most MAX_UPLOAD_BYTES (413 past it)."""
    length = request.content_length
    if length is not None and length > MAX_UPLOAD_BYTES:
        raise ApiError(413, TOO_LARGE)
    ctype = request.content_type
    if ctype in IMAGE_TYPES:
        data = await _read_limited(request.content.iter_chunked(CHUNK))
    elif ctype == "multipart/form-data":
        data = await _multipart_photo(request)
    else:
        raise ApiError(
            415, "Content-Type must be image/jpeg, image/png, image/webp or multipart/form-data"
        )
    if not data:
        raise ApiError(400, "photo: the request carries no image")
    return data


async def _multipart_photo(request: web.Request) -> bytes:
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "photo":
                return await _read_limited(_part_chunks(part))
            await part.release()
    except ApiError:
        raise
    except Exception as exc:  # no boundary, a broken part: aiohttp's parser refuses
        raise ApiError(400, "body: malformed multipart/form-data") from exc
    raise ApiError(400, "photo: multipart field 'photo' is missing")


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _read_limited(chunks: AsyncIterator[bytes]) -> bytes:
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > MAX_UPLOAD_BYTES:
            raise ApiError(413, TOO_LARGE)
    return bytes(buffer)


async def serve(request: web.Request) -> web.StreamResponse:
    """A stored photo; the gateway serves the local store itself and caches
    these answers in S3 mode, so this runs for a cold photo only."""
    name = request.match_info["name"]
    if not NAME.match(name):
        raise ApiError(404, "photo not found")
    try:
        photo = await request.app[STORE].get(name)
    except Exception as exc:
        raise _store_unavailable(exc) from exc
    if photo is None:
        raise ApiError(404, "photo not found")
    headers = {
        "Content-Type": photo.content_type,
        "Cache-Control": IMMUTABLE,
        "ETag": photo.etag,
        "X-Content-Type-Options": "nosniff",
    }
    if photo.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=photo.body, headers=headers)
