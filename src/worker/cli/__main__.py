"""`python -m worker.cli …` is `simjail …`."""

from worker.cli.main import entry

entry()
