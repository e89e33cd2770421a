"""YAML configs, shipped inside the package as bench.configs."""
