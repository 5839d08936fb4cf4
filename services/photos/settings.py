"""The photos service's settings from the environment. The gateway's renderer
(gateway/render.py) and the local stack read the same functions, so the store
directory nginx serves is the one the service writes.

    PHOTOS_PORT            first instance's port (8004); instance i on port + 100*i
    PHOTOS_INSTANCES       processes (else INSTANCES, else 1)
    PHOTOS_STORE           "local" (default) or "s3"
    PHOTOS_DIR             the local store's directory (data/photos in a checkout)
    PUBLIC_BASE_URL        what the returned URLs start with (http://127.0.0.1:8080)
    PHOTOS_WORKERS         threads decoding and encoding images (2)
    S3_BUCKET, S3_ENDPOINT_URL (or AWS_ENDPOINT_URL), S3_REGION (or AWS_REGION,
    AWS_DEFAULT_REGION), S3_PREFIX (photos/), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    (else botocore's usual chain: a Kubernetes service account's web identity too)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common import settings as cfg

SERVICE = "photos"
BASE_PORT = 8004
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
STORES = ("local", "s3")
CHECKOUT = Path(__file__).resolve().parents[2]
# In a checkout: beside the demo data (never under run/, which `make clean`
# removes), RUNWAY_DATA_DIR as the local stack reads it.
DEFAULT_DIR = CHECKOUT / "data" / "photos"


def base_port(env: Mapping[str, str] = os.environ) -> int:
    return cfg._int(env, "PHOTOS_PORT", BASE_PORT)


def instance_ports(env: Mapping[str, str] = os.environ) -> list[int]:
    first = base_port(env)
    count = cfg.instance_count(SERVICE, env)
    return [first + cfg.INSTANCE_PORT_STEP * i for i in range(count)]


def store_kind(env: Mapping[str, str] = os.environ) -> str:
    kind = (env.get("PHOTOS_STORE") or "local").strip().lower()
    if kind not in STORES:
        raise SystemExit(f"setting PHOTOS_STORE must be one of {STORES}, got {kind!r}")
    return kind


def store_dir(env: Mapping[str, str] = os.environ) -> Path:
    data_dir = env.get("RUNWAY_DATA_DIR")
    default = Path(data_dir) / "photos" if data_dir else DEFAULT_DIR
    return Path(env.get("PHOTOS_DIR") or default).resolve()


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    endpoint_url: str | None
    region: str | None
    prefix: str
    access_key_id: str | None
    secret_access_key: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        bucket = env.get("S3_BUCKET") or ""
        if not bucket:
            raise SystemExit("PHOTOS_STORE=s3 needs S3_BUCKET")
        return cls(
            bucket=bucket,
            endpoint_url=env.get("S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("S3_REGION")
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or None,
            prefix=env.get("S3_PREFIX", "photos/"),
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        )


@dataclass(frozen=True, slots=True)
class PhotoSettings:
    service: str
    host: str
    port: int
    public_base_url: str
    store: str
    directory: Path
    s3: S3Settings | None
    workers: int
    access_log: bool
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> PhotoSettings:
        store = store_kind(env)
        return cls(
            service=SERVICE,
            host=env.get("HOST", "127.0.0.1"),
            port=cfg._int(env, "PORT", base_port(env)),
            public_base_url=(env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:8080").rstrip("/"),
            store=store,
            directory=store_dir(env),
            s3=S3Settings.from_env(env) if store == "s3" else None,
            workers=max(1, cfg._int(env, "PHOTOS_WORKERS", 2)),
            access_log=env.get("ACCESS_LOG", "0") in ("1", "true", "yes"),
            log_level=env.get("LOG_LEVEL", "INFO"),
        )
