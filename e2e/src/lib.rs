//! End-to-end harness for sandbox-router (see e2e/README.md).
