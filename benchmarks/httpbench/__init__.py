"""The parts of `http_bench.py` (the command line; its docstring says what is measured and how).

- `workload`: the model, the published store and the request files, built once; paths and routes.
- `systems`: the systems table (what each system is, its command, its load, its checks, its bare).
- `checks`: the requests made before the load, and how their answers are judged.
- `peers`: the model-serving peers, each started from its own venv.
- `servers`: server processes: start, check, stop, CPU and PSS sampling.
- `wrk`: what wrk sends, and one wrk run parsed.
- `measure`: one system in one round.
- `report`: medians over rounds, ratios, the table, the problems seen, the JSON.
"""
