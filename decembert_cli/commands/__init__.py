"""One thin module per subcommand: parse options, build the config, call the library."""
