"""Use cases, written once for any Host: they return records and raise TbctlError, never print."""
