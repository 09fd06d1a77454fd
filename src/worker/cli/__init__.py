"""The `simjail` command (see `main`): parser, commands, and the output every command shares."""
