"""The fallback SSH backend over paramiko (imported only when it is the backend in use), with its own forwarder."""
