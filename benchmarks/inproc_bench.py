"""CPU per request through the real HTTP protocol and app, without sockets: a probe that other load barely
disturbs.

`http_bench.py` measures what a client sees, but on a shared 2-core machine wrk and the server compete
for the cores and any other process moves the figures. This drives the same objects in one process
instead: N simulated connections, each sending its next request as soon as its answer is complete (a
closed loop, like wrk's connections), fed as raw bytes to the server's HTTP protocol (augury's
`AuguryHttpProtocol`, or uvicorn's own with ``--proto plain``) over the app `augury serve` builds, with a
transport that hands the answer back instead of writing to a socket. It reports the process's CPU time per
request (the event loop's thread and the model's thread together). What it leaves out is the cost of the
system calls (a read and a write per request on a real socket) and of the event loop waiting on them.

    python benchmarks/inproc_bench.py dynamic --conns 4      # augury serve --model, 4 concurrent clients
    python benchmarks/inproc_bench.py static                 # augury serve --store, random published keys
    python benchmarks/inproc_bench.py bare --proto plain     # the bare endpoint on uvicorn's own protocol

Systems: ``dynamic`` and ``static`` (as in `http_bench.py`), ``bare`` (POST the v1 body to
`bare_server.py`'s app) and ``bare_get`` (GET a key from it). The workload is `http_bench.py`'s
(built under /tmp/augury-bench/http on first use).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from httpbench.workload import WORK, prepare  # noqa: E402


class Transport(asyncio.Transport):
    """What the protocol writes goes straight to its simulated client."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.closing = False

    def write(self, data: Any) -> None:
        self.client.received(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Run:
    """One measured run: `total` requests over `conns` clients."""

    def __init__(self, make_protocol: Callable[[], asyncio.Protocol], request: Callable[[], bytes],
                 conns: int, total: int) -> None:
        self.make_protocol, self.request = make_protocol, request
        self.conns, self.total, self.done = conns, total, 0
        self.finished = asyncio.Event()


class Client:
    """A keep-alive connection sending one request at a time."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.buf = b""
        self.protocol = run.make_protocol()
        self.protocol.connection_made(Transport(self))

    def send(self) -> None:
        self.protocol.data_received(self.run.request())

    def received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].lower() + b"\r\n"
            at = head.find(b"content-length: ")
            length = int(head[at + 16:head.find(b"\r\n", at)])
            if len(self.buf) < end + 4 + length:
                return
            if self.buf[9:12] != b"200":
                raise SystemExit(f"answer not 200: {self.buf[:300]!r}")
            self.buf = self.buf[end + 4 + length:]
            run = self.run
            run.done += 1
            if run.done + run.conns <= run.total:
                asyncio.get_running_loop().call_soon(self.send)
            elif run.done >= run.total:
                run.finished.set()


def app_and_request(system: str, monitor: bool = True, memo_mib: float | None = None
                    ) -> tuple[Any, Callable[[], bytes]]:
    w = prepare(WORK)
    keys = (w.work / "keys.txt").read_text().split()
    body = (w.work / "body_v1.json").read_bytes()

    def get() -> bytes:
        key = random.choice(keys).encode()
        return b"GET /v1/models/hgb20/predictions/%s HTTP/1.1\r\nhost: x\r\n\r\n" % key

    def post() -> bytes:
        return (b"POST /v1/models/hgb20:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body))

    if system in ("bare", "bare_get"):
        import bare_server

        return bare_server.app, post if system == "bare" else get
    from augury.serve.run import build_app
    from augury.serve.settings import LaunchConfig, ServeSettings

    # monitoring as `augury serve` does it by default: a static server watches its predictions against the
    # active version's profile; a dynamic one needs a reference (the catalogue the model scored).
    # --monitor off: the same server with the monitor's sampling at 0.
    if system == "static":
        settings = ServeSettings(monitor_sample=1.0 if monitor else 0.0,
                                 **({} if memo_mib is None else {"lookup_memo_mib": memo_mib}))
        return build_app(LaunchConfig(store_url=w.store_url, settings=settings)), get
    settings = ServeSettings(reference=str(w.work / "catalogue.parquet") if monitor else None,
                             monitor_sample=1.0 if monitor else 0.0)
    return build_app(LaunchConfig(model_ref=str(w.model), settings=settings)), post


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("system", choices=["dynamic", "static", "bare", "bare_get"])
    ap.add_argument("--proto", default="augury",
                    help="augury (AuguryHttpProtocol), plain (uvicorn's httptools protocol) or module:Class")
    ap.add_argument("--conns", type=int, default=32, help="concurrent clients [32]")
    ap.add_argument("--n", type=int, default=20000, help="requests measured, after 2,000 of warm-up [20000]")
    ap.add_argument("--monitor", choices=["on", "off"], default="on",
                    help="data monitoring (drift) as augury serve runs it by default, or off [on]")
    ap.add_argument("--warmup", type=int, default=2000,
                    help="requests before the measured ones [2000] (static: the server's memo of answers "
                         "fills as keys are first asked: 300000 reaches its steady state)")
    ap.add_argument("--memo-mib", type=float, default=None,
                    help="static: --lookup-memo-mib (default: augury serve's; 0: off)")
    args = ap.parse_args()
    import uvicorn
    from uvicorn.lifespan.on import LifespanOn
    from uvicorn.server import ServerState

    if args.proto == "augury":
        from augury.serve.protocol import AuguryHttpProtocol as protocol_class
    elif args.proto == "plain":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as protocol_class
    else:
        module, _, name = args.proto.partition(":")
        protocol_class = getattr(importlib.import_module(module), name)
    app, request = app_and_request(args.system, args.monitor == "on", args.memo_mib)
    loop = asyncio.get_running_loop()
    config = uvicorn.Config(app, lifespan="on", access_log=False, server_header=False, log_level="warning")
    config.load()
    state = ServerState()
    lifespan = LifespanOn(config)
    await lifespan.startup()

    def make_protocol() -> asyncio.Protocol:
        made: asyncio.Protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
        return made

    for total in (args.warmup, args.n):  # warm-up, then the measured run
        run = Run(make_protocol, request, args.conns, total)
        clients = [Client(run) for _ in range(args.conns)]
        wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        for client in clients:
            client.send()
        await run.finished.wait()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        loop_cpu = time.thread_time() - loop_cpu
        for client in clients:
            client.protocol.connection_lost(None)
    print(json.dumps({"system": args.system, "proto": args.proto, "monitor": args.monitor,
                      "conns": args.conns, "requests": args.n,
                      "cpu_us_per_request": round(cpu / args.n * 1e6, 1),
                      "loop_cpu_us_per_request": round(loop_cpu / args.n * 1e6, 1),
                      "wall_us_per_request": round(wall / args.n * 1e6, 1)}))
    await lifespan.shutdown()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
