"""The S3-compatible PhotoStore (store.py) for deployments where instances
share no disk (Kubernetes): aiobotocore, configured by the usual S3_*/AWS_*
variables (settings.py). The gateway caches what it serves (proxy_cache), so
a hot photo costs one GET to the bucket per gateway, not one per request."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from .settings import S3Settings
from .store import IMMUTABLE, StoredPhoto


class S3Store:
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        s = self.settings
        session = get_session()
        config = AioConfig(
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
        )
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=s.endpoint_url,
                region_name=s.region,
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                config=config,
            )
        )

    async def close(self) -> None:
        await self._stack.aclose()

    def _key(self, name: str) -> str:
        return self.settings.prefix + name

    async def exists(self, name: str) -> bool:
        try:
            await self._client.head_object(Bucket=self.settings.bucket, Key=self._key(name))
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        # S3 acknowledges a PUT only once the object is durably stored.
        await self._client.put_object(
            Bucket=self.settings.bucket,
            Key=self._key(name),
            Body=data,
            ContentType=content_type,
            CacheControl=IMMUTABLE,
        )

    async def get(self, name: str) -> StoredPhoto | None:
        try:
            resp = await self._client.get_object(Bucket=self.settings.bucket, Key=self._key(name))
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        async with resp["Body"] as stream:
            body = await stream.read()
        return StoredPhoto(body, resp["ContentType"], resp["ETag"])

    async def check(self) -> None:
        await self._client.head_bucket(Bucket=self.settings.bucket)

    async def listing(self) -> list[tuple[str, float]]:
        prefix = self.settings.prefix
        found = []
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) :]
                if "/" not in name:
                    found.append((name, item["LastModified"].timestamp()))
        return found

    async def delete(self, name: str) -> None:
        await self._client.delete_object(Bucket=self.settings.bucket, Key=self._key(name))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
