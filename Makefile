# vcnode: see README.md.
LIBTORCH ?= $(HOME)/.cache/vcnode/libtorch-2.11.0
export LIBTORCH
CARGO ?= cargo

.PHONY: all run test bench fuzz demo build release libtorch fmt clean

all: build

libtorch: $(LIBTORCH)/.complete
$(LIBTORCH)/.complete:
	scripts/fetch-libtorch.sh "$(LIBTORCH)"

build: libtorch
	$(CARGO) build --workspace

release: libtorch
	$(CARGO) build --release -p vcnode -p vcnode-lab --bins

## Start the node on the embedded defaults (SQLite under var/, CPU or GPU as configured).
run: release
	./target/release/vcnode serve --config conf/vcnode.toml

## Lints, unit and integration tests (real dcmtk peers, a real SQLite file), then `make run` itself.
test: libtorch
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace --all-targets
	$(MAKE) release
	tests/make_run_smoke.sh

## A local Orthanc and vcnode; phantom studies in, synthetic RC series out (see scripts/demo.sh).
demo: release
	scripts/demo.sh

## Benchmarks: each prints a ratio against a peer measured in the same run (dicomweb.sh: QIDO-RS
## and WADO-RS against Orthanc's DICOMweb plugin on the same 10,001 instances; gpu.sh, on a
## machine with an NVIDIA GPU: tch against PyTorch eager and torch.compile, end-to-end latency).
bench: release
	bench/ingest.sh
	bench/ingest_memory.sh
	bench/pipeline.sh
	bench/dicomweb.sh
	VCNODE_BENCH_PYTHON=$$(scripts/fetch-pytorch.sh) $(CARGO) bench -p vcnode-models --bench inference
	@if [ -e /proc/driver/nvidia/version ]; then \
	  scripts/gpu-carry.sh && PYTHON=$$(scripts/fetch-pytorch.sh) bench/gpu.sh; \
	else echo "no NVIDIA driver: the GPU measurements (bench/gpu.sh) left out"; fi

## Fuzzing on stable Rust (fuzz/): the DIMSE command parser, P-DATA reassembly and the ingest
## checks, FUZZ_SECONDS each, from a seed corpus of valid encodings. A panic, or a process that
## dies (stack overflow), saves its input under fuzz/crashes/ and fails; make each one a
## regression under fuzz/regressions/<target>/. FUZZ_SEED reproduces a run's mutations.
FUZZ_SECONDS ?= 60
FUZZ_SEED ?= $(shell date +%s)
fuzz: libtorch
	$(CARGO) build -p vcnode-fuzz
	./target/debug/vcnode-fuzz --target all --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED)

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
