"""The one package that may import both sides: the ``varde`` command, a local network, the demo.

Nothing here runs inside a hospital or at the gateway in production; it puts a
gateway and nodes together on one machine (:mod:`launcher.network`) for the
demo, the integration tests and the benchmarks, and assembles every side's
commands into the one ``varde`` console command (:mod:`launcher.cli`).
"""
