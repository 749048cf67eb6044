"""The default SSH backend: the system OpenSSH client, one ControlMaster per host."""
