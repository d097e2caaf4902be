"""One edge-triggered epoll set for all relayed sockets of a worker, itself watched by the event loop.

Why: `loop.add_reader` under uvloop costs a libuv poll handle per fd (a probing epoll ADD+DEL, an ioctl, and
three DELs on removal) and every pause/resume re-registers. Here each socket is added once with
EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET and never modified or deleted (close() removes it from the set): two epoll_ctl per
proxied connection. Edge-triggered means a handler reads until a short read (until EOF once EPOLLRDHUP was seen; it
reads again itself on resume after a pause), and writes wait for the next EPOLLOUT edge after a partial send.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable

EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR, select.EPOLLHUP
EPOLLRDHUP = select.EPOLLRDHUP  # the peer's FIN is queued: a short read does not mean nothing is left
_WATCH = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
MAX_EVENTS = 256  # per wake-up; the loop wakes again while more are ready (the set's fd is level-triggered)

Handler = Callable[[int], None]  # called with the epoll event mask


class Poller:
    __slots__ = ("_ep", "_register", "handlers", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ep = select.epoll()
        self._register = self._ep.register
        self.handlers: dict[int, Handler] = {}
        loop.add_reader(self._ep.fileno(), self.dispatch)

    def add(self, fd: int, handler: Handler) -> None:
        self.handlers[fd] = handler
        self._register(fd, _WATCH)

    def forget(self, fd: int) -> None:
        """Call before closing fd (closing removes it from the epoll set; no EPOLL_CTL_DEL needed)."""
        self.handlers.pop(fd, None)

    def dispatch(self) -> None:
        handlers = self.handlers
        for fd, events in self._ep.poll(0, MAX_EVENTS):
            handler = handlers.get(fd)
            if handler is not None:  # None: closed by an earlier handler of this batch
                handler(events)

    def close(self) -> None:
        if not self._ep.closed:
            self.loop.remove_reader(self._ep.fileno())
            self._ep.close()
