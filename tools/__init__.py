"""pfx command-line programs, one module per Postfix command."""
