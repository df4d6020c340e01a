"""Suite-wide pytest configuration: only plugin registration (fixtures live in their own modules)."""

# The real-registry fixtures for any test directory that needs them: Consul (consul_binary, consul_agent)
# and Kubernetes (kube_binaries, kube_cluster, kubeconfig, kube_restart, kube_compact), Eureka (eureka_server,
# eureka_auth_server, eureka_pair: tests/eureka_fixtures.py).
pytest_plugins = ["tests.consul_fixtures", "tests.kube_fixtures", "tests.eureka_fixtures"]
