"""`simjail loadtest`: benign and hostile jobs through a real Temporal server and real workers,
with faults injected while they run (run.py), the jobs (cases.py), the server, workers and
leak checks (cluster.py) and the faults (faults.py)."""
