"""The host's log records, written on a listener thread: where a record is logged on the
event loop it is only queued, so a slow or stuck stderr never stalls the loop. Imported
by ``plughost run`` alone (``logging.handlers`` costs every other command ~7 ms)."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import threading
from collections.abc import Iterator

from ..textcap import cap

__all__ = ["logging_off_the_loop"]

LOG_ROOM = 10_000  # log records waiting to be written; more are dropped and counted
log = logging.getLogger(__name__)


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands a record to the listener's thread without ever blocking: past ``room`` records
    waiting, it drops and counts. A message is capped as it is queued."""

    def __init__(self, records: queue.Queue[logging.LogRecord], room: int = LOG_ROOM) -> None:
        super().__init__(records)
        self.records = records
        self.room = room
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        prepared: logging.LogRecord = super().prepare(record)
        prepared.msg = prepared.message = cap(prepared.getMessage())
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.records.qsize() >= self.room:
            self.dropped += 1
            return
        self.records.put_nowait(record)


@contextlib.contextmanager
def logging_off_the_loop(close_wait: float) -> Iterator[None]:
    """The root logger's handlers (rich, on stderr) run on a listener thread for the block;
    where a record is logged it is only queued."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    if not handlers:
        yield
        return
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    handler = _QueueHandler(records)
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    listener.start()
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = handlers
        stopper = threading.Thread(target=listener.stop, name="plughost-log-stop", daemon=True)
        stopper.start()
        stopper.join(close_wait)  # as for the terminal: a stuck stderr does not keep us
        if handler.dropped:  # the loop is gone: said directly
            log.warning("%d log records not shown (stderr could not keep up)", handler.dropped)
