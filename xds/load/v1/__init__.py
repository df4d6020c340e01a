"""Generated code for xds.load.v1: regenerate with scripts/gen-protos, never edit by hand."""
