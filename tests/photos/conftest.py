"""The photos tests' processes, all real and on free ports: two photos
instances sharing one local store directory, a reviews and a qa instance
(their test databases), and nginx rendered from the settings in front."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer, free_port
from tests.gateway.harness import Gateway, ServiceInstance, free_instance_base

PHOTO_INSTANCES = 2


def store_directory() -> Path:
    # Not under pytest's tmp_path (mode 700): nginx's workers run as nobody
    # when the tests run as root, and read the store directly.
    directory = Path(tempfile.mkdtemp(prefix="runway-photos-"))
    directory.chmod(0o755)
    return directory


def stored(directory: Path) -> set[str]:
    """The store's objects (its work directory left out)."""
    return {p.name for p in directory.iterdir() if not p.name.startswith(".")}


def start_all(instances: list[ServiceInstance]) -> None:
    for instance in instances:  # start together, then wait
        instance.start(wait=False)
    for instance in instances:
        instance.wait_ready()


class Stack:
    """What the tests talk to: the gateway's port, the instances, the store."""

    def __init__(self, gateway_port: int, store: Path, env: dict[str, str], logs: Path) -> None:
        self.gateway_port = gateway_port
        self.store = store
        self.base = free_instance_base(PHOTO_INSTANCES)
        self.env = env
        self.photos = [
            ServiceInstance("photos", self.base + 100 * i, env, logs / f"photos-{i}.log")
            for i in range(PHOTO_INSTANCES)
        ]

    def gateway_env(self, **extra: str) -> dict[str, str]:
        return {
            "GATEWAY_PORT": str(self.gateway_port),
            "GATEWAY_STATUS_PORT": str(free_port()),
            "INSTANCES": "1",
            "PHOTOS_INSTANCES": str(PHOTO_INSTANCES),
            "PHOTOS_PORT": str(self.base),
            "PHOTOS_DIR": str(self.store),
            "GATEWAY_RATE": "1000",
            "GATEWAY_BURST": "1000",
            "PHOTOS_UPLOAD_RATE": "10000",
            **extra,
        }


@pytest.fixture(scope="module")
def photo_stack(
    reviews_db: str,
    qa_db: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, Gateway]]:
    """Photos (x2, local store), reviews and qa behind one gateway."""
    logs = tmp_path_factory.mktemp("photo-logs")
    gateway_port = free_port()
    store = store_directory()
    env = {
        "PHOTOS_DIR": str(store),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{gateway_port}",
        "PHOTOS_WORKERS": "2",
    }
    stack = Stack(gateway_port, store, env, logs)
    common = {"REDIS_URL": redis_server.url, "DB_POOL_MIN": "1", "DB_POOL_MAX": "2"}
    reviews = ServiceInstance(
        "reviews", free_port(), {**common, "REVIEWS_DATABASE_URL": reviews_db}, logs / "r.log"
    )
    qa = ServiceInstance("qa", free_port(), {**common, "QA_DATABASE_URL": qa_db}, logs / "q.log")
    everything = [*stack.photos, reviews, qa]
    gateway = Gateway(
        tmp_path_factory.mktemp("photo-gateway"),
        stack.gateway_env(
            REVIEWS_PORT=str(reviews.port), QA_PORT=str(qa.port), OVERVIEW_PORT=str(free_port())
        ),
    )
    try:
        start_all(everything)
        gateway.start()
        yield stack, gateway
    finally:
        gateway.stop()
        for instance in everything:
            instance.stop()
        remove_tree(store)


def remove_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
