"""The exit role: a node forwarding overlay traffic to the internet, and clients routing through one.

``policy`` (what an exit lets out) and ``selection`` (which exit a client
uses) are sans-IO; ``nft`` renders nftables scripts and runs ``nft``;
``forwarding`` is the exit's side (forwarding, masquerade, policy table),
``client_routes`` and ``marking`` the client's (policy routing, socket
marks); ``service`` ties them to a running node.
"""
