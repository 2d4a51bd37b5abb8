// Package targettest is the conformance suite for readers of signed custom target metadata
// (target.Custom): the server's repository catalog, its upload checks and the device's
// update client and verified boot each run RunCustom with their own reader, so each judges
// the same documents alike (issue 10, defect 11: the server read a missing
// security_version as 0 where the device refused it).
//
// Test-only: no shipped binary imports it.
package targettest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Paths and values of the valid documents.
const (
	OSPath      = "os/moat-os/1.0.0"
	AppPath     = "apps/dw100-app/1.0.0"
	ComponentID = "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10"
	Product     = "DW100"
)

// Case is one custom document at a target path, and whether a reader must accept it.
type Case struct {
	Name   string
	Path   string
	Custom string // "" for a target entry without custom metadata
	Valid  bool
}

const (
	osDoc  = `{"kind":"os","version":"1.0.0","security_version":3,"component_id":"` + ComponentID + `","feeds":["Retail","RetailEval"]}`
	appDoc = `{"kind":"app","version":"1.0.0","security_version":3,"component_id":"` + ComponentID + `","product":"DW100"}`
)

// with returns doc with old replaced by new once.
func with(doc, old, new string) string {
	if !strings.Contains(doc, old) {
		panic("targettest: " + old + " not in " + doc)
	}
	return strings.Replace(doc, old, new, 1)
}

// Cases are the documents every reader must judge alike.
var Cases = []Case{
	{"valid OS", OSPath, osDoc, true},
	{"valid app", AppPath, appDoc, true},
	{"valid app security version 0", AppPath, with(appDoc, `"security_version":3`, `"security_version":0`), true},
	{"valid app security version max", AppPath, with(appDoc, `"security_version":3`, `"security_version":4294967295`), true},
	{"valid OS keys sorted", OSPath, `{"component_id":"` + ComponentID + `","feeds":["Retail"],"kind":"os","security_version":3,"version":"1.0.0"}`, true},
	{"valid app with white space", AppPath, " " + with(appDoc, `"kind":`, "\n\t\"kind\" : ") + "\n", true},

	{"no custom", AppPath, "", false},
	{"OS missing security_version", OSPath, with(osDoc, `"security_version":3,`, ``), false},
	{"app missing security_version", AppPath, with(appDoc, `"security_version":3,`, ``), false},
	{"security_version null", AppPath, with(appDoc, `"security_version":3`, `"security_version":null`), false},
	{"security_version string", AppPath, with(appDoc, `"security_version":3`, `"security_version":"3"`), false},
	{"security_version bool", AppPath, with(appDoc, `"security_version":3`, `"security_version":true`), false},
	{"security_version negative", AppPath, with(appDoc, `"security_version":3`, `"security_version":-1`), false},
	{"security_version overflows uint32", AppPath, with(appDoc, `"security_version":3`, `"security_version":4294967296`), false},
	{"security_version huge", AppPath, with(appDoc, `"security_version":3`, `"security_version":1`+strings.Repeat("0", 40)), false},
	{"security_version fraction", AppPath, with(appDoc, `"security_version":3`, `"security_version":1.5`), false},
	{"security_version exponent", AppPath, with(appDoc, `"security_version":3`, `"security_version":1e2`), false},
	{"kind missing", AppPath, with(appDoc, `"kind":"app",`, ``), false},
	{"kind upper case", AppPath, with(appDoc, `"kind":"app"`, `"kind":"APP"`), false},
	{"kind not the path's", AppPath, with(appDoc, `"kind":"app"`, `"kind":"os"`), false},
	{"kind number", AppPath, with(appDoc, `"kind":"app"`, `"kind":1`), false},
	{"version missing", AppPath, with(appDoc, `"version":"1.0.0",`, ``), false},
	{"version not the path's", AppPath, with(appDoc, `"version":"1.0.0"`, `"version":"2.0.0"`), false},
	{"version null", AppPath, with(appDoc, `"version":"1.0.0"`, `"version":null`), false},
	{"component_id missing", AppPath, with(appDoc, `"component_id":"`+ComponentID+`",`, ``), false},
	{"component_id upper case", AppPath, with(appDoc, ComponentID, strings.ToUpper(ComponentID)), false},
	{"extra field", AppPath, with(appDoc, `"product"`, `"sha256":"00","product"`), false},
	{"key in other case", AppPath, with(appDoc, `"security_version"`, `"Security_Version"`), false},
	{"duplicate key", AppPath, with(appDoc, `"security_version":3`, `"security_version":0,"security_version":3`), false},
	{"product missing on an app", AppPath, with(appDoc, `,"product":"DW100"`, ``), false},
	{"product empty", AppPath, with(appDoc, `"product":"DW100"`, `"product":""`), false},
	{"product array", AppPath, with(appDoc, `"product":"DW100"`, `"product":["DW100"]`), false},
	{"product on an OS", OSPath, with(osDoc, `"feeds"`, `"product":"DW100","feeds"`), false},
	{"feeds on an app", AppPath, with(appDoc, `"product"`, `"feeds":["Retail"],"product"`), false},
	{"feeds missing on an OS", OSPath, with(osDoc, `,"feeds":["Retail","RetailEval"]`, ``), false},
	{"feeds empty", OSPath, with(osDoc, `["Retail","RetailEval"]`, `[]`), false},
	{"feeds null", OSPath, with(osDoc, `["Retail","RetailEval"]`, `null`), false},
	{"feeds string", OSPath, with(osDoc, `["Retail","RetailEval"]`, `"Retail"`), false},
	{"feeds of numbers", OSPath, with(osDoc, `["Retail","RetailEval"]`, `[1]`), false},
	{"feeds with null", OSPath, with(osDoc, `["Retail","RetailEval"]`, `["Retail",null]`), false},
	{"feeds duplicate", OSPath, with(osDoc, `["Retail","RetailEval"]`, `["Retail","Retail"]`), false},
	{"feed with a space", OSPath, with(osDoc, `["Retail","RetailEval"]`, `["Retail Eval"]`), false},
	{"too many feeds", OSPath, with(osDoc, `["Retail","RetailEval"]`, `["F0","F1","F2","F3","F4","F5","F6","F7","F8","F9","F10","F11","F12","F13","F14","F15","F16"]`), false},
	{"not an object", AppPath, `["app"]`, false},
	{"null", AppPath, `null`, false},
	{"empty object", AppPath, `{}`, false},
	{"trailing data", AppPath, appDoc + `{}`, false},
	{"truncated", AppPath, appDoc[:len(appDoc)-1], false},
	{"oversized", AppPath, with(appDoc, `{`, `{`+strings.Repeat(" ", 5000)), false},
}

// Entry is the go-tuf target entry of c: a valid hash and length, and c's custom metadata.
func (c Case) Entry() *metadata.TargetFiles {
	sum := make([]byte, 32)
	sum[0] = 0xab
	tf := &metadata.TargetFiles{Length: 42, Hashes: metadata.Hashes{"sha256": sum}, Path: c.Path}
	if c.Custom != "" {
		raw := []byte(c.Custom)
		tf.Custom = (*json.RawMessage)(&raw)
	}
	return tf
}

// RunCustom runs every case through read, a reader of one signed target entry, and fails
// unless read accepts exactly the valid cases.
func RunCustom(t *testing.T, read func(path string, tf *metadata.TargetFiles) error) {
	t.Helper()
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) {
			err := read(c.Path, c.Entry())
			if c.Valid && err != nil {
				t.Errorf("read(%s) = %v, want accepted", c.Path, err)
			}
			if !c.Valid && err == nil {
				t.Errorf("read(%s) accepted it, want refused", c.Path)
			}
		})
	}
}
