"""Process logging: one line per record on stderr, written in batches.

Every write is logged (with its request id), so at a thousand writes per
second a handler that writes and flushes each line costs a system call per
request here and, worse, a wake-up of whatever reads the pipe (supervisord
locally used 12% of a core relaying W3's lines one by one). Lines are
therefore gathered and written together at most FLUSH_S later; a WARNING or
worse, a full buffer, a record logged outside the event loop and process exit
(logging.shutdown) write at once, so nothing that matters waits or is lost
on a clean stop."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

FLUSH_S = 0.2
MAX_BUFFERED = 64 * 1024


class BatchedStderrHandler(logging.Handler):
    def __init__(self, fd: int | None = None) -> None:
        super().__init__()
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._lines: list[str] = []
        self._size = 0
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:  # called under self.lock
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._buffer(line, record.levelno >= logging.WARNING)

    def append_info(self, line: str) -> None:
        """Buffer a line formatted by the caller, as an INFO record's would be."""
        with self.lock:
            self._buffer(line, False)

    def _buffer(self, line: str, urgent: bool) -> None:
        self._lines.append(line)
        self._size += len(line)
        if urgent or self._size >= MAX_BUFFERED:
            self._write()
            return
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: nobody would flush later
                self._write()
                return
            self._scheduled = True
            loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        data = "".join(self._lines).encode(errors="backslashreplace")
        self._lines.clear()
        self._size = 0
        try:
            while data:  # a pipe may take part of a large write
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # stderr closed: there is nowhere left to report it

    def close(self) -> None:
        self.flush()
        super().close()


class InfoLines:
    """`logger.info(message)` for one hot logger (a line per write), in the
    same format, at about a third of the cost: the logging module's record,
    lock and formatter took 7-10% of a writer process's CPU (decision 0038). Falls
    back to `logger.info` unless configure_logging's handler is the only one."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._second = -1
        self._stamp = ""

    def info(self, message: str) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = _handler
        if handler is None or logger.handlers or logging.root.handlers != [handler]:
            logger.info("%s", message)
            return
        now = time.time()
        second = int(now)
        if second != self._second:  # logging.Formatter's default asctime, per second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        millis = int((now - second) * 1000)
        prefix = f"{self._stamp},{millis:03d} INFO {_service} {logger.name}"
        handler.append_info(f"{prefix}: {message}\n")


_handler: BatchedStderrHandler | None = None
_service = ""


def configure_logging(service: str, level: str) -> None:
    global _handler, _service
    handler = BatchedStderrHandler()
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    _handler, _service = handler, service
