"""World-model families, one sub-package each. Importing this package registers them."""
