"""Examples for tbctl. A package only so tests can `from examples.make_example_logdir import ...`."""
