"""The `compliance` command: one module per subcommand, no business logic here."""
