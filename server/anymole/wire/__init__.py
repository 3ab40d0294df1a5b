"""The wire contract as both ends see it: what the server (`anymole.service`) and the headless client
(`anymole.client`) share, so that neither imports the other.

    proto/       generated stubs of proto/anymole/v1 (scripts/gen_proto.py); do not edit
    version.py   PROTOCOL_VERSION, its history and the handshake rule
    convert.py   every proto <-> domain conversion, with validation (InvalidInput names the field): motion and
                 requests here, re-exporting limits.py (Limits, shared checks), characters.py (skeletons,
                 meshes, assets) and events.py (job states, listings, events)
    motion_json.py  motion as JSON in canonical space, for clients in any language

It imports the pipeline's domain types (`anymole.pipeline`: events, job states) and nothing of the service.
"""
