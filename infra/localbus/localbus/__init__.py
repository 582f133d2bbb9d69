"""The Docker-free local stack: the real servers the bus talks to, started as host processes on 127.0.0.1.

Used by the test suite's fixtures and by the demo, so both run exactly the same servers.
"""
