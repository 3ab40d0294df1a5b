"""The gRPC service (`anymole.v1.AnyMoLeService`): the only server-side code that sees gRPC or protos.

    server.py      ServerConfig, build_server(cfg) -> (server, port), serve(cfg): health, reflection, TLS,
                   message limits, graceful SIGTERM
    servicer.py    AnyMoLeServicer: requests -> JobManager / CharacterStore -> events
    auth.py        GateInterceptor: bearer token and protocol-version metadata
    convert.py     every proto <-> domain conversion, with validation (InvalidInput names the field)
    errors.py      one table from anymole.errors to gRPC status codes
    jobs.py        JobManager: FIFO queue, one worker per device, event logs, watch/replay, cancel, restart
    store.py       per-job directories (request, events.jsonl, results) on disk
    timeline.py    a job's motion on disk as it streams (result timeline, drafts); events hold MotionRefs
    budget.py      the memory budget and the limits it derives; UploadGate (upload bytes in flight)
    retention.py   --keep-days / --max-disk: collects old finished jobs and unused characters
    characters.py  content-addressed character cache
    version.py     PROTOCOL_VERSION and the handshake rule
    proto/         generated stubs (scripts/gen_proto.py); do not edit
"""
