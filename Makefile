# Thin wrapper over dev.py (which needs nothing but Python 3.10+).
.PHONY: setup run test site bench
setup:
	python3 dev.py setup
run:
	python3 dev.py run
test:
	python3 dev.py test
site:
	python3 dev.py site
bench: setup
	.venv/bin/python benchmarks/bench_generator.py
	.venv/bin/python benchmarks/bench_pretrain.py
