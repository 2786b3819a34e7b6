"""Cluster profiles as data files (`<name>.toml`); `jobs.profile` loads and validates them."""
