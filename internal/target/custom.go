package target

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
)

// Kinds of image a target holds; the first segment of its path says which.
const (
	KindOS  = "os"  // os/<name>/<version>, listed by targets.json (platform OS key)
	KindApp = "app" // apps/<name>/<version>, listed by apps.json (the tenant's key)
)

// Limits of the custom object, so that a decoder of signed bytes allocates little (rule 5).
const (
	MaxCustomBytes = 4096
	MaxFeeds       = 16
	MaxFeedLen     = 64
)

// ErrBadCustom: a target's custom metadata is missing, malformed or disagrees with its path.
var ErrBadCustom = errors.New("invalid custom target metadata")

// Custom is the custom object moat signs into every target entry of targets.json (OS
// images) and apps.json (apps). It is the one definition of those fields: the CLI, the demo
// and the test platform write it with Encode; the server (repository catalog, upload
// checks) and the device (update client, verified boot) read it with DecodeCustom, so they
// judge every signed document alike (DESIGN rule 2; attacked by the targettest suite,
// which each reader runs).
//
// Every field is required unless said otherwise:
//
//	field             OS target          app target
//	kind              "os"               "app"
//	version           the path's version the path's version
//	security_version  required           required (0 for a first release)
//	component_id      required           required
//	product           absent             required
//	feeds             required, 1..16    absent
//
// A missing required field, a field the kind does not take, an unknown field, a duplicate
// key, a wrong JSON type (null included) or a number outside uint32 is an error: never a
// default (STYLE, fail closed; a missing security_version once read as 0 on the server and
// as an error on the device).
type Custom struct {
	Kind            string   `json:"kind"`
	Version         string   `json:"version"`
	SecurityVersion uint32   `json:"security_version"` // the anti-rollback floor the image sets
	ComponentID     string   `json:"component_id"`     // lower-case UUID of the image's component
	Product         string   `json:"product,omitempty"`
	Feeds           []string `json:"feeds,omitempty"` // the OS feeds the release is published to
}

// customField is one key of the custom object and whether each kind requires it (a key
// a kind does not require it refuses).
type customField struct {
	os, app bool
	decode  func(c *Custom, raw json.RawMessage) error
}

var customFields = map[string]customField{
	"kind":             {true, true, func(c *Custom, raw json.RawMessage) error { return decodeString(raw, &c.Kind) }},
	"version":          {true, true, func(c *Custom, raw json.RawMessage) error { return decodeString(raw, &c.Version) }},
	"security_version": {true, true, func(c *Custom, raw json.RawMessage) error { return decodeUint32(raw, &c.SecurityVersion) }},
	"component_id":     {true, true, func(c *Custom, raw json.RawMessage) error { return decodeString(raw, &c.ComponentID) }},
	"product":          {false, true, func(c *Custom, raw json.RawMessage) error { return decodeString(raw, &c.Product) }},
	"feeds":            {true, false, decodeFeeds},
}

// DecodeCustom decodes and checks the custom metadata raw of the target at path (nil when
// the entry has none). It accepts exactly what Encode writes: one JSON object with the keys
// its kind requires, spelled exactly, each once, and valid values (Validate). Errors wrap
// ErrBadCustom.
func DecodeCustom(path string, raw []byte) (Custom, error) {
	c, err := decodeCustom(raw)
	if err == nil {
		err = c.Validate(path)
	}
	if err != nil {
		return Custom{}, fmt.Errorf("%w: target %s: %w", ErrBadCustom, path, err)
	}
	return c, nil
}

func decodeCustom(raw []byte) (Custom, error) {
	var c Custom
	if raw == nil {
		return c, errors.New("no custom metadata")
	}
	if len(raw) > MaxCustomBytes {
		return c, fmt.Errorf("custom metadata is %d bytes, more than %d", len(raw), MaxCustomBytes)
	}
	// encoding/json alone would match keys case-insensitively, keep the last of duplicate
	// keys and read null as "leave it": walk the keys ourselves.
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return c, errors.New("custom metadata is not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return c, err
		}
		key, _ := tok.(string) // inside an object, a token here is always a key
		f, ok := customFields[key]
		if !ok {
			return c, fmt.Errorf("unknown field %q", key)
		}
		if seen[key] {
			return c, fmt.Errorf("duplicate field %q", key)
		}
		seen[key] = true
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return c, fmt.Errorf("%s: %w", key, err)
		}
		if err := f.decode(&c, val); err != nil {
			return c, fmt.Errorf("%s: %w", key, err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return c, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return c, errors.New("trailing data after the custom metadata")
	}
	// Which keys the kind requires, and which it refuses.
	for key, f := range customFields {
		need := f.os
		if c.Kind == KindApp {
			need = f.app
		} else if c.Kind != KindOS {
			break // Validate names the bad kind
		}
		if need && !seen[key] {
			return c, fmt.Errorf("%s target has no %s", c.Kind, key)
		}
		if !need && seen[key] {
			return c, fmt.Errorf("%s target must not have %s", c.Kind, key)
		}
	}
	return c, nil
}

func decodeString(raw json.RawMessage, s *string) error {
	if len(raw) == 0 || raw[0] != '"' {
		return errors.New("not a string")
	}
	return json.Unmarshal(raw, s)
}

// decodeUint32 reads a JSON integer 0..2^32-1: encoding/json refuses a sign, a fraction,
// an exponent and an overflow for an unsigned field.
func decodeUint32(raw json.RawMessage, n *uint32) error {
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return errors.New("not an unsigned integer")
	}
	return json.Unmarshal(raw, n)
}

func decodeFeeds(c *Custom, raw json.RawMessage) error {
	if len(raw) == 0 || raw[0] != '[' {
		return errors.New("not an array")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return err
	}
	if len(items) > MaxFeeds {
		return fmt.Errorf("more than %d feeds", MaxFeeds)
	}
	c.Feeds = make([]string, len(items))
	for i, it := range items {
		if err := decodeString(it, &c.Feeds[i]); err != nil {
			return fmt.Errorf("[%d]: %w", i, err)
		}
	}
	return nil
}

// Validate checks c as the custom metadata of the target at path: the kind is the path's
// (os/... or apps/...), the version is the path's last segment, the component ID a
// lower-case UUID, an app names a valid product and an OS image 1 to MaxFeeds distinct
// feeds (letters and digits), and neither has the other's field. It reports every problem.
func (c Custom) Validate(path string) error {
	var v problem.Validation
	segs := strings.Split(path, "/")
	want := ""
	switch {
	case !ValidPath(path) || len(segs) != 3:
		v.Add("path", "invalid_target_path", "target path %q is not os/<name>/<version> or apps/<name>/<version>", path)
	case segs[0] == "os":
		want = KindOS
	case segs[0] == "apps":
		want = KindApp
	default:
		v.Add("path", "invalid_target_path", "target path %q is neither under os/ nor apps/", path)
	}
	if c.Kind != KindOS && c.Kind != KindApp {
		v.Add("kind", "invalid_kind", "kind must be %q or %q, got %q", KindOS, KindApp, c.Kind)
	} else if want != "" && c.Kind != want {
		v.Add("kind", "kind_mismatch", "kind %q does not match target path %q", c.Kind, path)
	}
	if !ValidVersion(c.Version) {
		v.Add("version", "invalid_version", "version %q is not a valid version", c.Version)
	} else if len(segs) == 3 && c.Version != segs[2] {
		v.Add("version", "version_mismatch", "version %q does not match target path %q", c.Version, path)
	}
	if !ValidComponentID(c.ComponentID) {
		v.Add("component_id", "invalid_component_id", "component_id must be a lower-case UUID")
	}
	switch c.Kind {
	case KindOS:
		if c.Product != "" {
			v.Add("product", "product_not_allowed", "an os target names no product")
		}
		c.checkFeeds(&v)
	case KindApp:
		ident.CheckName(&v, "product", c.Product)
		if c.Feeds != nil {
			v.Add("feeds", "feeds_not_allowed", "an app target has no feeds")
		}
	}
	return v.Err()
}

func (c Custom) checkFeeds(v *problem.Validation) {
	if len(c.Feeds) == 0 || len(c.Feeds) > MaxFeeds {
		v.Add("feeds", "invalid_feeds", "an os target is published to 1 to %d feeds, got %d", MaxFeeds, len(c.Feeds))
	}
	for i, f := range c.Feeds {
		ok := f != "" && len(f) <= MaxFeedLen
		for j := range len(f) {
			ok = ok && IsAlnum(f[j])
		}
		if !ok {
			v.Add(fmt.Sprintf("feeds[%d]", i), "invalid_feed", "feed %q is not 1 to %d letters and digits", f, MaxFeedLen)
		} else if slices.Contains(c.Feeds[:i], f) {
			v.Add(fmt.Sprintf("feeds[%d]", i), "duplicate_feed", "feed %q is listed twice", f)
		}
	}
}

// Encode checks c as the custom metadata of the target at path (Validate) and returns it as
// JSON that DecodeCustom reads back to c.
func (c Custom) Encode(path string) (json.RawMessage, error) {
	if err := c.Validate(path); err != nil {
		return nil, fmt.Errorf("%w: target %s: %w", ErrBadCustom, path, err)
	}
	if c.Kind == KindApp {
		c.Feeds = nil
	}
	return json.Marshal(c)
}

// ValidComponentID accepts a lower-case UUID other than the nil UUID, as image manifests
// write component IDs.
func ValidComponentID(s string) bool {
	if len(s) != 36 || s == "00000000-0000-0000-0000-000000000000" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}
