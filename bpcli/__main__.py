from bpcli.cli.app import main

main()
