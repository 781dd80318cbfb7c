"""HTTP contract tests of the plan API, run against servers that scripts/serve.sh starts."""
