from mtop_edge.cli import main

main()
