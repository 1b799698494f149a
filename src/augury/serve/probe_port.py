"""Connections to the probe port (``augury serve --probe-port``): `ProbeHttpProtocol`, the HTTP protocol
of `protocol.AuguryHttpProtocol` answering only the paths that are never refused; a connection becomes one
when it is made on a probe port (`AuguryHttpProtocol.connection_made`)."""

from __future__ import annotations

from augury.serve.admission import NEVER_SHED
from augury.serve.http_cycle import STATUS_LINES
from augury.serve.protocol import AuguryHttpProtocol
from augury.serve.wire import dump_json


class ProbeHttpProtocol(AuguryHttpProtocol):
    """A connection to the probe port (``augury serve --probe-port``): it answers the paths that are
    never refused (`admission.NEVER_SHED`: the health probes, ``/metrics``) and nothing else (404).

    Why a port of their own: probes are exempt from ``--max-in-flight``, but on the serving port they
    are not exempt from the kernel's listen queue. An orchestrator's probe opens a new connection, and
    under overload that connection waits behind the clients' (measured on 2 cores at 3x capacity: the
    queue 1,979 of 2,048 full, probes answered after 1.4 s, or after seconds more once the kernel drops
    their SYNs). The probe port's queue holds only probes, and its connections are served by the same
    event loop, so a probe waits for at most a turn of the loop. The same worker answers it: a probe
    still says whether this process is alive and ready, not a side process."""

    def on_headers_complete(self) -> None:
        if self.url.startswith(_PROBE_PATHS) or self.parser.should_upgrade():
            super().on_headers_complete()
            return
        self.state.total_requests += 1
        self.write(STATUS_LINES[404] + self.default_head() + _NOT_A_PROBE)
        self.close()
        self.refusing = (b"", False)  # answered: what may still come of its body is dropped


_PROBE_PATHS = tuple(path.encode("ascii") for path in NEVER_SHED)
#: the rest of the probe port's answer to any other path (after the status line and default headers).
_NOT_A_PROBE_BODY = dump_json({"error": "this port answers only " + ", ".join(NEVER_SHED)
                                        + "; send other requests to the serving port"})
_NOT_A_PROBE = (b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                % len(_NOT_A_PROBE_BODY) + _NOT_A_PROBE_BODY)
