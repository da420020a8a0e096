"""p2pvpn: a peer-to-peer VPN on py-libp2p and trio."""

from p2pvpn import libp2p_import as _libp2p_import

# Before anything imports py-libp2p: its packages' __init__ files import every transport it has
# (seconds of start-up under load); p2pvpn.libp2p_import says why and how this is safe.
_libp2p_import.install()
