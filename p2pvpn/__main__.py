import os

if (_fd := os.environ.get("P2PVPN_HANDOVER_FD")) is not None:  # `up`/`relay` exec'd their node (p2pvpn.node_process)
    from p2pvpn.node_process import run_handed_over

    run_handed_over(int(_fd))
else:
    from p2pvpn.cli import main

    main()
