"""A tiny round-robin TCP load balancer for the scale-out benchmark (bench/scale_out.py).

    python bench/balancer.py --port 8080 --backend 127.0.0.1:8001 --backend 127.0.0.1:8002

Each client connection is given to the next backend in turn and its bytes are copied both ways until
either side closes (layer 4, like a TCP-mode load balancer; an HTTP keep-alive connection stays on its
backend). One asyncio process: on a 2-core machine it takes CPU from the replicas, which is why the
scale-out run measures what it costs (the bare floor direct and through it) and reports it beside the
replica figures. A backend that refuses a connection is skipped for that connection (the next is tried).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal

CHUNK = 65536


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except RuntimeError:
            pass


def serve(port: int, backends: list[tuple[str, int]]) -> None:
    turn = itertools.cycle(range(len(backends)))

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        first = next(turn)
        for k in range(len(backends)):
            host, bport = backends[(first + k) % len(backends)]
            try:
                back_r, back_w = await asyncio.open_connection(host, bport)
                break
            except OSError:
                continue
        else:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, back_w), pipe(back_r, client_w))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


def parse_backend(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True, type=parse_backend)
    args = parser.parse_args()
    serve(args.port, args.backend)
