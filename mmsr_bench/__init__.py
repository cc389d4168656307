"""The mmsr-bench package; its sub-packages are the stages of the data flow: data -> suites -> evaluation -> models -> results -> runner -> cli (and dashboard)."""
