from p2pvpn.cli import main

main()
