# Thin wrapper over dev.py (which needs nothing but Python 3.10+).
.PHONY: setup run test bench
setup:
	python3 dev.py setup
run:
	python3 dev.py run
test:
	python3 dev.py test
bench: setup
	.venv/bin/python benchmarks/bench_generator.py
	.venv/bin/python benchmarks/bench_pretrain.py
