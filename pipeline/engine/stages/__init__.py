"""The pipeline's stages, one module each: intake, upload, train, monitor, fetch, generate,
collect. Each reads its work from the state store, does it, and records the result."""
