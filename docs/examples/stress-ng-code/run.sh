#!/bin/sh
# run.sh STRESSOR SEED: the code under test in docs/examples/stress-ng.toml.
# One stressor for a fixed number of bogo operations, seeded by the run.
exec stress-ng --"$1" 1 --"$1"-ops 50 --vm-bytes 16M --seed "$2" --metrics-brief
