"""`mtop-edge serve`: the runtime over HTTP, with dynamic batching (the `serve` extra: Starlette, uvicorn,
prometheus-client). The app, the batcher, request checking, metrics and the OpenAPI schema each have
a module."""
