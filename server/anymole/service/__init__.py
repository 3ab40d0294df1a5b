"""The gRPC service (`anymole.v1.AnyMoLeService`): the server side of the wire contract.

    server.py      ServerConfig, build_server(cfg) -> (server, port), serve(cfg): health, reflection, TLS,
                   message limits, graceful SIGTERM
    servicer.py    AnyMoLeServicer: requests -> JobManager / CharacterStore -> events
    auth.py        GateInterceptor: bearer token and protocol-version metadata
    errors.py      one table from anymole.errors to gRPC status codes
    jobs.py        JobManager: FIFO queue, one worker per device, event logs, watch/replay, cancel, restart
    store.py       per-job directories (request, events.jsonl, results) on disk
    timeline.py    a job's motion on disk as it streams (result timeline, drafts); events hold MotionRefs
    budget.py      the memory budget and the limits it derives; UploadGate (upload bytes in flight)
    retention.py   --keep-days / --max-disk: collects old finished jobs and unused characters
    characters.py  content-addressed character cache

The stubs, the protocol version and the proto <-> domain conversion it shares with the client live in
`anymole.wire`.
"""
