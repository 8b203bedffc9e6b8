"""Background jobs: how work is sent (job contracts) and the Dramatiq actors that do it.

Job contracts, importable by anything without loading an actor or an engine:
- jobs.send: send a job's message by actor name (`send("transcribe", job_id)`), as the web tier and CLI do;
- jobs.broker: the Redis broker and the queues; jobs.queues: what Redis holds for each queue;
- jobs.heartbeats: which workers are alive.

Actors and worker-side middleware (they import workers/): jobs.transcription, jobs.llm, jobs.analysis,
jobs.downloads, jobs.indexing, jobs.middleware, jobs.crashes, jobs.reconciler. `dramatiq jobs.worker
--queues asr` runs a worker on them.
"""
