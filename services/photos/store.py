"""Where photos are kept, behind one small interface (`PhotoStore`), and its
local implementation: files in one directory, which the gateway serves
directly (gateway/README.md). The S3-compatible one is s3_store.py.

Names are content-addressed (`<sha256 prefix>.jpg`, `<...>-thumb.jpg`), so a
stored object never changes: writing one again writes the same bytes."""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CONTENT_TYPES = {"jpg": "image/jpeg", "webp": "image/webp"}
# A name's bytes never change (content-addressed): cached anywhere for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
# Written here, then renamed into place: never served (the gateway refuses
# dot paths), on the same filesystem as the store so the rename is atomic.
INCOMING = ".incoming"


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    body: bytes
    content_type: str
    etag: str


class PhotoStore(Protocol):
    async def exists(self, name: str) -> bool: ...

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        """Durable once it returns: a crash after it never loses the object."""
        ...

    async def get(self, name: str) -> StoredPhoto | None: ...

    async def check(self) -> None:
        """Raises when the store cannot be written (readiness)."""
        ...

    async def listing(self) -> list[tuple[str, float]]:
        """Every stored name with its creation time (Unix seconds): for sweep.py."""
        ...

    async def delete(self, name: str) -> None: ...


def content_type(name: str) -> str:
    return CONTENT_TYPES[name.rsplit(".", 1)[1]]


class LocalStore:
    """One directory; every blocking call runs in a thread (asyncio.to_thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def create(self) -> None:
        # World-readable: the gateway's nginx workers read these files directly.
        (self.directory / INCOMING).mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)

    def path(self, name: str) -> Path:
        return self.directory / name

    async def exists(self, name: str) -> bool:
        return await asyncio.to_thread(self.path(name).is_file)

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._put, name, data)

    def _put(self, name: str, data: bytes) -> None:
        # Temp file + fsync + atomic rename + fsync of the directory: after a
        # crash the name holds either nothing or the whole object.
        fd, tmp = tempfile.mkstemp(dir=self.directory / INCOMING, prefix=name + ".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def get(self, name: str) -> StoredPhoto | None:
        try:
            body = await asyncio.to_thread(self.path(name).read_bytes)
        except FileNotFoundError:
            return None
        return StoredPhoto(body, content_type(name), f'"{name.split(".")[0]}"')

    async def check(self) -> None:
        def writable() -> None:
            if not os.access(self.directory / INCOMING, os.W_OK):
                raise OSError(f"{self.directory} is not writable")

        await asyncio.to_thread(writable)

    async def listing(self) -> list[tuple[str, float]]:
        def scan() -> list[tuple[str, float]]:
            with os.scandir(self.directory) as entries:
                return [
                    (e.name, e.stat().st_mtime)
                    for e in entries
                    if e.is_file() and not e.name.startswith(".")
                ]

        return await asyncio.to_thread(scan)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self.path(name).unlink, True)
