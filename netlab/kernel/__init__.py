"""The kernel edge: every side effect netlab has on the machine lives in this package."""
