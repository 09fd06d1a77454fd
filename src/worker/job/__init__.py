"""The pieces of one job, each a concern of its own; `worker.pipeline.run_request` wires them:
the job's directory (`workdir`), its sources (`sources`), its children (`children`) and what it
publishes (`publish`)."""
