"""Stage 2, suites: frozen suite specs (specs/*.toml, shipped as package data), building and verifying their hashed artifacts."""
