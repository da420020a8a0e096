"""Run ``python -m p2pvpn`` with per-step stamps of small ICMP packets (bench/latency.py --trace).

Why: the added RTT is spent partly inside each node process and partly
between them (kernel delivery, process wake-ups); an in-process benchmark
(bench/latency_budget.py) cannot see the second part. CLOCK_MONOTONIC is
shared by network namespaces, so stamps from both nodes fall on one axis.

Wraps, before the node starts: the TUN read and write, the per-peer queue,
the datagram seal / send / drain / open, and trio's epoll wait (a
``wake`` stamp each time the loop returns from an idle wait with events).
Only packets of at most ``SMALL`` bytes are traced (the benchmark's
echoes), so bulk traffic is not slowed. Each stamp is one line
``t_ns event detail`` appended to ``$P2PVPN_TRACE_OUT``.

    python bench/latency_trace.py up --dir ... (the arguments of ``p2pvpn``)

Stamps only with ``$P2PVPN_TRACE_OUT`` set. ``$P2PVPN_DIRECT_SEND`` and
``$P2PVPN_TUN_POLL`` ("1" on, "0" off) set the switches of
p2pvpn.dataplane.egress (the TUN reader's direct datagram send, step 3';
the receive task's TUN read right after its writes, step 1'), the
before/after of ``bench/latency.py --ab --switch`` and ``bench/throughput.py
--switch-baseline``; ``$P2PVPN_NO_DIRECT`` is ``$P2PVPN_DIRECT_SEND=0``.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from typing import Any

SMALL = 300
_fd = os.open(os.environ.get("P2PVPN_TRACE_OUT", "/dev/null"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
_now = time.monotonic_ns


def stamp(event: str, detail: object = "") -> None:
    os.write(_fd, f"{_now()} {event} {detail}\n".encode())


def icmp_tag(packet: bytes | memoryview, offset: int = 0) -> str | None:
    """'8:17' (echo request, seq 17) for a small IPv4 ICMP echo / reply; None for anything else."""
    if len(packet) - offset > SMALL or len(packet) - offset < 28 or packet[offset] >> 4 != 4 or packet[offset + 9] != 1:
        return None
    i = offset + (packet[offset] & 15) * 4
    return f"{packet[i]}:{packet[i + 6] << 8 | packet[i + 7]}"


def install() -> None:
    import trio
    from trio._core import _io_epoll

    from p2pvpn.dataplane.offload import VNET_HDR_LEN
    from p2pvpn.dataplane.peer_queue import PacketQueue
    from p2pvpn.datagram.session import DatagramSession
    from p2pvpn.datagram.udp_socket import DatagramSocket
    from p2pvpn.tun.device import LinuxTun

    get_events = _io_epoll.EpollIOManager.get_events

    def traced_get_events(self: Any, timeout: float) -> Any:
        events = get_events(self, timeout)
        if timeout > 0 and events:
            stamp("wake", f"{len(events)}")
        return events

    _io_epoll.EpollIOManager.get_events = traced_get_events  # type: ignore[method-assign]

    def tun_read(self: LinuxTun, packets: list[bytes]) -> None:
        for p in packets:
            if (tag := icmp_tag(p, VNET_HDR_LEN if self.offload else 0)) is not None:
                stamp("tun_read", tag)

    if hasattr(LinuxTun, "read_now"):  # read_batch reads through it; so does egress step 1' (route_ready)
        read_now = LinuxTun.read_now

        def traced_read_now(self: LinuxTun, n: int) -> list[bytes]:
            packets = read_now(self, n)
            tun_read(self, packets)
            return packets

        LinuxTun.read_now = traced_read_now  # type: ignore[method-assign]
    else:
        read_batch = LinuxTun.read_batch

        async def traced_read_batch(self: LinuxTun, n: int) -> list[bytes]:
            packets = await read_batch(self, n)
            tun_read(self, packets)
            return packets

        LinuxTun.read_batch = traced_read_batch  # type: ignore[method-assign]

    def traced_write(orig: Any, offset_of: Any) -> Any:
        def write(self: LinuxTun, packet: bytes) -> bool:
            ok = orig(self, packet)
            if (tag := icmp_tag(packet, offset_of(self))) is not None:
                stamp("tun_write", tag)
            return ok
        return write

    LinuxTun.write = traced_write(LinuxTun.write, lambda s: 0)  # type: ignore[method-assign]
    LinuxTun.write_record = traced_write(LinuxTun.write_record, lambda s: VNET_HDR_LEN)  # type: ignore[method-assign]

    get_batch = PacketQueue.get_batch

    async def traced_get_batch(self: PacketQueue, *args: Any, **kwargs: Any) -> list[bytes]:
        batch = await get_batch(self, *args, **kwargs)
        if len(batch) == 1 and len(batch[0]) <= SMALL + VNET_HDR_LEN:
            stamp("queue_get", len(batch[0]))
        return batch

    PacketQueue.get_batch = traced_get_batch  # type: ignore[method-assign]

    seal_packets = DatagramSession.seal_packets

    def traced_seal(self: DatagramSession, packets: list[bytes], now: float) -> list[bytes]:
        out = seal_packets(self, packets, now)
        if len(packets) == 1 and len(packets[0]) <= SMALL:
            stamp("sealed", len(packets[0]))
        return out

    DatagramSession.seal_packets = traced_seal  # type: ignore[method-assign]

    if hasattr(DatagramSocket, "send_now"):  # the TUN reader's direct send (egress step 3')
        send_now = DatagramSocket.send_now

        def traced_send_now(self: DatagramSocket, endpoint: Any, datagrams: list[bytes]) -> int:
            sent = send_now(self, endpoint, datagrams)
            if sent == 1 and len(datagrams[0]) <= SMALL + 29:
                stamp("udp_sent", len(datagrams[0]))
            return sent

        DatagramSocket.send_now = traced_send_now  # type: ignore[method-assign]

    send = DatagramSocket.send

    async def traced_send(self: DatagramSocket, endpoint: Any, datagrams: list[bytes]) -> None:
        small = len(datagrams) == 1 and len(datagrams[0]) <= SMALL + 29
        await send(self, endpoint, datagrams)
        if small:
            stamp("udp_sent", len(datagrams[0]))

    DatagramSocket.send = traced_send  # type: ignore[method-assign]

    from p2pvpn.datagram import udp_socket

    if hasattr(udp_socket, "_drain"):
        drain = udp_socket._drain

        def traced_drain(sock: Any, *args: Any) -> Any:
            received, more = drain(sock, *args)
            if received and len(received[0][0]) <= SMALL + 29:
                stamp("udp_recv", len(received[0][0]))
            return received, more

        udp_socket._drain = traced_drain  # type: ignore[assignment]
    else:  # before 752cae6: trio's socket
        from trio._socket import _SocketType

        recvmsg = _SocketType.recvmsg

        async def traced_recvmsg(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await recvmsg(self, *args, **kwargs)
            if self.type == 2 and len(result[0]) <= SMALL + 29:  # SOCK_DGRAM
                stamp("udp_recv", len(result[0]))
            return result

        _SocketType.recvmsg = traced_recvmsg  # type: ignore[method-assign]

    name = "receive_batch" if hasattr(DatagramSession, "receive_batch") else "receive"
    receive = getattr(DatagramSession, name)

    def traced_receive(self: DatagramSession, *args: Any, **kwargs: Any) -> Any:
        out = receive(self, *args, **kwargs)
        packet = out.packets[-1] if name == "receive_batch" and out.packets else getattr(out, "packet", None)
        if packet is not None and (tag := icmp_tag(packet)) is not None:
            stamp("opened", tag)
        return out

    setattr(DatagramSession, name, traced_receive)


SWITCHES = {"P2PVPN_DIRECT_SEND": "DIRECT_SEND", "P2PVPN_TUN_POLL": "TUN_POLL"}
"""Environment variable ("1" on, "0" off) -> the p2pvpn.dataplane.egress switch it sets (the benchmarks' A/B)."""


def stay_in_this_process() -> None:
    """Keep the node in this process: `up` execs a fresh node process (p2pvpn.node_process), which would
    lose the switches and the stamps set here (both variants of an A/B run alike, so they stay comparable)."""
    try:
        from p2pvpn import node_process
    except ImportError:  # a p2pvpn from before the handover runs its node in this process anyway
        return
    node_process.hand_over = lambda handover: None


def main() -> None:
    settings = {switch: os.environ[variable] == "1" for variable, switch in SWITCHES.items() if variable in os.environ}
    if os.environ.get("P2PVPN_NO_DIRECT"):  # the older spelling of P2PVPN_DIRECT_SEND=0
        settings["DIRECT_SEND"] = False
    if settings:
        from p2pvpn.dataplane import egress

        for switch, on in settings.items():
            if not hasattr(egress, switch):
                raise SystemExit(f"latency_trace: this p2pvpn has no {switch} to set")
            setattr(egress, switch, on)
    if "P2PVPN_TRACE_OUT" in os.environ:
        install()
    stay_in_this_process()
    sys.argv = ["p2pvpn", *sys.argv[1:]]
    runpy.run_module("p2pvpn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
