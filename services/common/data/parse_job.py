"""One file being parsed while another is COPYed: `ParseJob` runs a
`FileParser` in a spawned child process (or inline) and hands its chunks to
the loader's event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from .csv_parse import Chunk, Converter, FileParser, FileSpec, FileStats
from .values import EtlError

# Files smaller than this are parsed inline: spawning a parser process costs
# more than it saves.
PROCESS_MIN_BYTES = 16 << 20


def _finish_converter(convert: Converter) -> Any:
    result = getattr(convert, "result", None)
    return result() if callable(result) else None


def _parse_worker(
    pipe: Any, path: Path, spec: FileSpec, make_converter: Callable[[Any], Converter], context: Any
) -> None:
    """Child process body: parse one file and stream chunks back to the loader."""
    try:
        convert = make_converter(context)
        parser = FileParser(path, spec, convert)
        for chunk in parser.chunks():
            pipe.send(("chunk", chunk))
        pipe.send(("done", parser.stats, _finish_converter(convert)))
    except EtlError as exc:
        pipe.send(("fatal", str(exc)))
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


class ParseJob:
    """One file being parsed, in a spawned child process or inline.

    `parse_in_child`: True = in a spawned child, False = inline (here, as
    the COPY consumes the chunks), None = in a child for files of
    PROCESS_MIN_BYTES (16 MB) or more, inline below that. A child starts
    parsing as soon as the job is created, and a drain thread queues its
    chunks in memory, so the next file can be parsed while the loader's
    single connection is still COPYing the previous one (the load is one
    transaction, so COPYs cannot overlap each other). `close()` always."""

    def __init__(
        self,
        data_dir: Path,
        spec: FileSpec,
        make_converter: Callable[[Any], Converter],
        context: Any,
        parse_in_child: bool | None = None,
    ) -> None:
        self.spec = spec
        self.path = Path(data_dir) / spec.name
        if not self.path.is_file():
            raise EtlError(f"{spec.name}: file not found at {self.path}")
        self.size = self.path.stat().st_size
        if parse_in_child is None:
            parse_in_child = self.size >= PROCESS_MIN_BYTES
        self.stats: FileStats | None = None
        self.result: Any = None
        self._make_converter, self._context = make_converter, context
        self._proc: Any = None
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        if parse_in_child:
            self._start_process()

    def _start_process(self) -> None:
        # spawn, not fork: the loader process holds an event loop, sockets and
        # executor threads that a forked child must not inherit.
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_parse_worker,
            name=f"parse {self.spec.name}",
            daemon=True,
            args=(sender, self.path, self.spec, self._make_converter, self._context),
        )
        self._proc.start()
        sender.close()
        self._receiver = receiver
        self._thread = threading.Thread(
            target=self._drain, name=f"drain {self.spec.name}", daemon=True
        )
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                msg = self._receiver.recv()
            except (EOFError, OSError):
                self._queue.put(("eof",))
                return
            self._queue.put(msg)
            if msg[0] != "chunk":
                return

    async def chunks(self) -> AsyncIterator[Chunk]:
        if self._proc is None:
            convert = self._make_converter(self._context)
            parser = FileParser(self.path, self.spec, convert)
            for chunk in parser.chunks():
                yield chunk
            self.stats, self.result = parser.stats, _finish_converter(convert)
            return
        loop = asyncio.get_running_loop()
        while True:
            msg = await loop.run_in_executor(None, self._queue.get)
            if msg[0] == "chunk":
                yield msg[1]
            elif msg[0] == "done":
                self.stats, self.result = msg[1], msg[2]
                return
            elif msg[0] == "fatal":
                raise EtlError(msg[1])
            elif msg[0] == "error":
                raise EtlError(f"{self.spec.name}: parser failed:\n{msg[1]}")
            else:
                raise EtlError(
                    f"{self.spec.name}: parser process died (exit code {self._proc.exitcode})"
                )

    def close(self) -> None:
        """Stop the child (e.g. after a failed COPY) and release the pipe."""
        if self._proc is None:
            return
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._receiver.close()
        self._thread.join(timeout=5)
