"""The batched stderr handler: lines wait at most FLUSH_S inside the event loop,
and a warning, a record logged outside the loop or a close writes at once."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from services.common import logs
from services.common.logs import BatchedStderrHandler


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def drain(fd: int) -> str:
    try:
        return os.read(fd, 1 << 20).decode()
    except BlockingIOError:
        return ""


def make_logger(write_fd: int) -> tuple[logging.Logger, BatchedStderrHandler]:
    handler = BatchedStderrHandler(write_fd)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test-logs-{write_fd}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


async def test_lines_in_the_loop_are_written_together_soon(pipe):
    read_fd, write_fd = pipe
    logger, _ = make_logger(write_fd)
    for i in range(3):
        logger.info("write %d", i)
    assert drain(read_fd) == ""  # held back: one write for the batch
    await asyncio.sleep(logs.FLUSH_S + 0.05)
    assert drain(read_fd) == "INFO write 0\nINFO write 1\nINFO write 2\n"


async def test_a_warning_writes_at_once_after_what_came_before(pipe):
    read_fd, write_fd = pipe
    logger, _ = make_logger(write_fd)
    logger.info("first")
    logger.warning("trouble")
    assert drain(read_fd) == "INFO first\nWARNING trouble\n"


def test_outside_a_loop_nothing_waits(pipe):
    read_fd, write_fd = pipe
    logger, _ = make_logger(write_fd)
    logger.info("no loop here")
    assert drain(read_fd) == "INFO no loop here\n"


async def test_close_writes_what_is_held(pipe):
    read_fd, write_fd = pipe
    logger, handler = make_logger(write_fd)
    logger.info("held")
    handler.close()
    assert drain(read_fd) == "INFO held\n"
