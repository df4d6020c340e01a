"""Policy schema, loading with located errors, and (Catalog, Policy) -> DesiredState."""
