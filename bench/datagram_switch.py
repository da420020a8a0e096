"""Run a node (through bench/latency_trace.py) with the datagram socket's receive switch set: the same-run A/B.

``$P2PVPN_RECVMMSG`` ("1" on, "0" off) sets p2pvpn.datagram.udp_socket.RECVMMSG (one ``recvmmsg`` per batch,
or one ``recvmsg`` per datagram) before the node starts; the egress switches and stamps of
bench/latency_trace.py apply as well. ``bench/throughput.py --switch-baseline recvmmsg`` uses it. The node
runs in this process (latency_trace skips ``up``'s exec of a fresh node process, which would lose the
setting), in both variants alike.

    python bench/datagram_switch.py up --dir ... (the arguments of ``p2pvpn``)
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

TRACER = Path(__file__).resolve().parent / "latency_trace.py"


def main() -> None:
    value = os.environ.get("P2PVPN_RECVMMSG")
    if value is not None:
        from p2pvpn.datagram import udp_socket

        if not hasattr(udp_socket, "RECVMMSG"):
            raise SystemExit("datagram_switch: this p2pvpn has no udp_socket.RECVMMSG to set")
        udp_socket.RECVMMSG = value == "1"
    runpy.run_path(str(TRACER), run_name="__main__")


if __name__ == "__main__":
    main()
