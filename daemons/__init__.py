"""pfx server programs, one module per Postfix daemon."""
