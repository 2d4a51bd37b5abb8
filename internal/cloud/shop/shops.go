package shop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The shops file (moat cloud --shops FILE) names each repair shop's inventory service:
//
//	version: 1
//	shops:
//	  seattle-north:                     # the shop's ID, as sales and appliances name it
//	    name: Seattle North Appliance Repair
//	    url: https://inventory.seattle-north.example/api
//	    token_file: seattle-north.token  # relative to this file's directory
//
// Unknown fields, a missing version and anchors or aliases are errors, each reported as
// "file:line: message".

// Limits of a shops file.
const (
	MaxShopsFileBytes = 256 << 10
	MaxShops          = 1000
	MaxTokenBytes     = 4096
	maxNameBytes      = 100
	maxURLBytes       = 512
)

// Shop is one repair shop's inventory service.
type Shop struct {
	// ID is the shop's ID, as the cloud's sales and appliances name it.
	ID   string
	Name string
	// URL is the service's base URL: https, or http to a loopback address only (a shop
	// run beside the cloud, as the demo does).
	URL string
	// TokenFile holds the bearer token the cloud presents to the shop.
	TokenFile string
	Line      int
}

// ShopIDRE is the syntax of a shop ID (as cloudstore keeps it).
var ShopIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// FileError lists every problem of a shops file as "file:line: message".
type FileError struct {
	Problems []string
}

func (e *FileError) Error() string { return strings.Join(e.Problems, "\n") }

// LoadShops reads a shops file; relative token_file paths are resolved against its
// directory.
func LoadShops(path string) ([]Shop, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("shops file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxShopsFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("shops file: %w", err)
	}
	shops, err := ParseShops(data, path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	for i := range shops {
		if !filepath.IsAbs(shops[i].TokenFile) {
			shops[i].TokenFile = filepath.Join(dir, shops[i].TokenFile)
		}
	}
	return shops, nil
}

type shopsParser struct {
	name     string
	problems []string
}

func (p *shopsParser) errf(line int, format string, args ...any) {
	p.problems = append(p.problems, fmt.Sprintf("%s:%d: %s", p.name, line, fmt.Sprintf(format, args...)))
}

// ParseShops reads a shops file's bytes; filename names it in messages.
func ParseShops(data []byte, filename string) ([]Shop, error) {
	p := &shopsParser{name: filename}
	shops := p.parse(data)
	if len(p.problems) > 0 {
		return nil, &FileError{Problems: p.problems}
	}
	return shops, nil
}

var (
	yamlLineRE   = regexp.MustCompile(`line ([0-9]+)`)
	yamlPrefixRE = regexp.MustCompile(`^yaml: (line [0-9]+: )?`)
)

func (p *shopsParser) parse(data []byte) []Shop {
	if len(data) > MaxShopsFileBytes {
		p.errf(1, "file is more than %d bytes", MaxShopsFileBytes)
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		line := 1
		if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		if errors.Is(err, io.EOF) {
			p.errf(1, "file is empty")
		} else {
			p.errf(line, "invalid YAML: %s", yamlPrefixRE.ReplaceAllString(err.Error(), ""))
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		p.errf(max(extra.Line, 1), "file holds more than one YAML document")
		return nil
	}
	if !p.plain(&doc, 0) || len(doc.Content) != 1 {
		if len(p.problems) == 0 {
			p.errf(1, "file must hold one YAML mapping")
		}
		return nil
	}
	top := p.mapping(doc.Content[0], "the file", []string{"version", "shops"}, []string{"version", "shops"})
	if top == nil {
		return nil
	}
	if n := top["version"]; n != nil && (n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Value != "1") {
		p.errf(n.Line, "version must be 1")
	}
	n := top["shops"]
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, "shops must be a mapping of shop ID to {name, url, token_file}")
		return nil
	}
	if len(n.Content)/2 > MaxShops {
		p.errf(n.Line, "shops declares %d shops, more than %d", len(n.Content)/2, MaxShops)
		return nil
	}
	var out []Shop
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode || !ShopIDRE.MatchString(k.Value):
			p.errf(k.Line, "shop ID %q must be 1 to 64 lower-case letters, digits or '-'", k.Value)
			continue
		case seen[k.Value]:
			p.errf(k.Line, "duplicate shop %q", k.Value)
			continue
		}
		seen[k.Value] = true
		if s, ok := p.shop(k.Value, k.Line, v); ok {
			out = append(out, s)
		}
	}
	return out
}

func (p *shopsParser) shop(id string, line int, n *yaml.Node) (Shop, bool) {
	what := "shop " + id
	f := p.mapping(n, what, []string{"name", "url", "token_file"}, []string{"name", "url", "token_file"})
	if f == nil {
		return Shop{}, false
	}
	s := Shop{ID: id, Line: line}
	before := len(p.problems)
	if v := f["name"]; v != nil {
		if v.Kind != yaml.ScalarNode || v.Value == "" || !printable(v.Value, maxNameBytes) {
			p.errf(v.Line, "%s: name must be 1 to %d bytes of printable text", what, maxNameBytes)
		}
		s.Name = v.Value
	}
	if v := f["url"]; v != nil {
		if err := CheckURL(v.Value); v.Kind != yaml.ScalarNode || err != nil {
			p.errf(v.Line, "%s: url: %v", what, err)
		}
		s.URL = v.Value
	}
	if v := f["token_file"]; v != nil {
		if v.Kind != yaml.ScalarNode || v.Value == "" || !printable(v.Value, 4096) {
			p.errf(v.Line, "%s: token_file must be a path", what)
		}
		s.TokenFile = v.Value
	}
	return s, len(p.problems) == before
}

// CheckURL accepts a shop's base URL: https with a host, or http to a loopback address
// (localhost, 127.0.0.0/8, ::1); no user information, query or fragment.
func CheckURL(s string) error {
	if s == "" || !printable(s, maxURLBytes) || strings.ContainsAny(s, " \t") {
		return fmt.Errorf("must be 1 to %d bytes without spaces", maxURLBytes)
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("%q must be an absolute URL without user information, query or fragment", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if h := u.Hostname(); h == "localhost" || net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback() {
			return nil
		}
		return fmt.Errorf("%q: plain http is allowed only to a loopback address; use https", s)
	}
	return fmt.Errorf("%q must be an https URL", s)
}

func (p *shopsParser) plain(n *yaml.Node, depth int) bool {
	switch {
	case depth > 8:
		p.errf(n.Line, "nested more than 8 deep")
		return false
	case n.Kind == yaml.AliasNode || n.Anchor != "":
		p.errf(n.Line, "YAML anchors and aliases are not allowed")
		return false
	case n.Tag == "!!merge":
		p.errf(n.Line, "YAML merge keys are not allowed")
		return false
	}
	switch n.Tag {
	case "", "!!str", "!!int", "!!bool", "!!null", "!!map", "!!seq", "!!float":
	default:
		p.errf(n.Line, "YAML tag %s is not allowed", n.Tag)
		return false
	}
	for _, c := range n.Content {
		if !p.plain(c, depth+1) {
			return false
		}
	}
	return true
}

func (p *shopsParser) mapping(n *yaml.Node, what string, known, required []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, "%s must be a mapping", what)
		return nil
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case !slices.Contains(known, k.Value):
			p.errf(k.Line, "%s: unknown field %q (known: %s)", what, k.Value, strings.Join(known, ", "))
		case out[k.Value] != nil:
			p.errf(k.Line, "%s: duplicate field %q", what, k.Value)
		default:
			out[k.Value] = v
		}
	}
	for _, r := range required {
		if out[r] == nil {
			p.errf(n.Line, "%s: missing field %q", what, r)
		}
	}
	return out
}
