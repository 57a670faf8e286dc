"""Test support shared by every test layer (integration, acceptance, benchmarks): real processes
on loopback (`processes`) and raw, slow HTTP clients (`slowloris`). Fixtures stay in the layers'
conftest.py; this package holds plain helpers any test may import (`from support.processes import
...`).
"""
