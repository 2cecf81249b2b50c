"""pfx shared library: the equivalent of Postfix's util/ and global/ code."""
