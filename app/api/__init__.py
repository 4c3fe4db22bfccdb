"""HTTP plumbing shared by the domain routers: error bodies, pagination, names."""
