"""xDS over gRPC: a pure per-stream protocol core, asyncio glue, and the project's management API."""
