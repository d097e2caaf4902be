"""Probes and observations: connections made from inside pods, and what pods recorded while they ran.

`observed` and `facts` are pure data; `connect` and `readers` touch the kernel; `runner` runs a scenario's checks.
"""
