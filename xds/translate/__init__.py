"""DesiredState -> Envoy protos (envoy.config.*.v3), one module per resource type."""
