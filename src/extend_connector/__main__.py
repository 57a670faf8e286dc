from extend_connector.cli import main

main()
