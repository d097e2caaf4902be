"""NAME:PORT and IP:PORT, parsed one way everywhere (the standard library only: apps and load generators run in pods
and import nothing heavy)."""

from __future__ import annotations


def split_host_port(text: str) -> tuple[str, int]:
    """NAME:PORT or IP:PORT -> (NAME, PORT); ValueError with a message that says what was expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"'{text}' is not NAME:PORT or IP:PORT (a port is 1-65535), e.g. reviews:9080")
    return host, int(port)


def is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 and str(int(p)) == p for p in parts)
