"""Every ``eventflow`` subcommand that is not a long-running process: one module per command group."""
