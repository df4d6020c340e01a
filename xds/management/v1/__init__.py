"""Generated code for xds.management.v1: regenerate with scripts/gen-protos, never edit by hand."""
