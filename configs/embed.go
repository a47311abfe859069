package configs

import _ "embed"

// Demo is configs/demo.yaml, the config `spillway demo` runs.
//
//go:embed demo.yaml
var Demo []byte
