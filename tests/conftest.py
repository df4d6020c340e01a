"""Suite-wide pytest configuration: only plugin registration (fixtures live in their own modules)."""

# The real-Consul fixtures (consul_binary, consul_agent) for any test directory that needs them.
pytest_plugins = ["tests.consul_fixtures"]
