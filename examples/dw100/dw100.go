// Package dw100 holds the DW100 dishwasher example's files that programs embed: its rules
// for the manufacturer cloud (rules.yaml, the reference of docs/cloud.md), which `moat
// demo` runs its cloud with. The app itself is app-sdk-demo; its manifest is in app/.
package dw100

import _ "embed"

// Rules is rules.yaml: the DW100's rules for `moat cloud --rules`.
//
//go:embed rules.yaml
var Rules []byte
