"""Machines tbctl acts on. `core` sees only `Host`; whether it is this machine or one over SSH stays here."""
