"""A discrete-event model of a p2pvpn network's discovery, 10 to 1,000+ nodes, in one process.

What is real and what is modeled is listed in :mod:`p2pvpn.sim.report`
(``REAL``, ``MODELED``); ``python bench/scale.py sim`` runs it.
"""
