"""tests/net/test_apps.sh: an asyncio echo server and client (Python's standard library).

  async_echo.py server IP PORT        echo every connection until its peer's FIN; prints
                                      "listening" once bound
  async_echo.py client IP PORT N SIZE N connections at once, each sends SIZE random bytes
                                      in 10,000-byte writes while reading, half-closes, and
                                      compares what came back; prints "good G of N"
"""
import asyncio
import os
import sys


async def handle(reader, writer):
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def server(ip, port):
    srv = await asyncio.start_server(handle, ip, port, backlog=1024)
    print("listening", flush=True)
    async with srv:
        await srv.serve_forever()


async def one(ip, port, size):
    reader, writer = await asyncio.open_connection(ip, port)
    data = os.urandom(size)

    async def send():
        for k in range(0, size, 10000):
            writer.write(data[k:k + 10000])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    got = bytearray()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        got += chunk
    await sender
    writer.close()
    return bytes(got) == data


async def client(ip, port, n, size):
    res = await asyncio.wait_for(asyncio.gather(*(one(ip, port, size) for _ in range(n)),
                                                return_exceptions=True), 90)
    bad = [r for r in res if isinstance(r, BaseException)]
    print("good", sum(1 for r in res if r is True), "of", n,
          ("(first error: %r)" % bad[0]) if bad else "", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server(sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
