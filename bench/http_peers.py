# SPDX-License-Identifier: MIT
"""Python peers for bench/io_run.py: the HTTP hello server and the C10K echo
server on asyncio, with the default loop or uvloop (Protocol-based, the
fast way to write asyncio servers).

    python3 bench/http_peers.py http PORT [uvloop]
    python3 bench/http_peers.py echo PORT [uvloop]
"""
import asyncio
import sys

RESP = (b"HTTP/1.1 200 OK\r\nServer: asyncio\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 13\r\n\r\nHello, World!")


class Http(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.t.write(RESP * n)


class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        self.t.write(data)


async def main(kind, port):
    loop = asyncio.get_running_loop()
    proto = Http if kind == "http" else Echo
    srv = await loop.create_server(proto, "127.0.0.1", port, backlog=4096)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[3] == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
