"""Generated from protos/ by scripts/compile-protos; do not edit."""
