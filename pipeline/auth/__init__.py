"""Authentication and transport security shared by every listener.

- `principal`: who is calling (`Principal`, `ANONYMOUS`), read by receivers and the API;
- `config`: the top-level `auth:` section (tokens by SHA-256, tokens_file);
- `tokens`: constant-time bearer-token verification and new-token generation;
- `http` / `grpc`: the aiohttp middleware and the gRPC check that put a Principal on requests;
- `tls`: server SSL contexts (aiohttp) and gRPC credentials that reload changed certificates;
- `tenant`: stamping the ingest token's tenant on OTLP requests;
- `listeners`: the config rules (no non-loopback bind without auth).
"""
